"""Forecast of won amount in a period, with a P10–P90 range, by three methods side by side.

Each open deal is simulated: does it win (with the method's probability) and, if so, when? The
"when" is drawn from how long deals that were won took from the same stage, among those that
had already spent at least as long there as this deal has (point-in-time: deals won by the
forecast time only). Summing the simulated wins that land inside the period gives the range.

Methods: the CRM's configured stage weights (when the config has them), the data-driven stage
weights (lowered by dwell), and the model's win probability. A backtest replays past periods
as of their start and compares each method with what was actually won.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.stage_weights import StageWeights
from features.errors import InputInvalid
from features.frame import open_points, stage_state
from features.stages import StageOrder
from features.stays import by_deals, stays
from features.tables import Tables
from features.times import to_utc

SIMS = 4000
# won stays kept per (stage, size band) pool: a quantile of days to a win needs a few thousand,
# and every won stay of a 3M-deal export (millions, each kept twice) was held at the fit and
# carried by every bundle and loaded by the service
MAX_POOL = 5000
Method = Callable[[Tables, pd.DataFrame, pd.Timestamp], np.ndarray]  # (tables at t, open deals, t) → P(win)


def parse_period(text: str, as_of: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """'2026-10' (a month), '2026Q4' (a quarter), '2026' (a year) or 'next-30d' (from as_of)."""
    text = text.strip()
    if text.startswith("next-") and text.endswith("d") and text[5:-1].isdigit():
        start = to_utc(as_of)
        return start, start + pd.Timedelta(days=int(text[5:-1]))
    try:
        freq = "Q" if "Q" in text.upper() else ("Y" if len(text) == 4 else "M")
        p = pd.Period(text.upper(), freq=freq)
    except (ValueError, TypeError) as exc:
        raise InputInvalid(f"--period: found {text!r}, expected a month (2026-10), a quarter (2026Q4), a year (2026) or next-30d") from exc
    return to_utc(p.start_time), to_utc((p + 1).start_time)


def _won_stays(history: pd.DataFrame, stages: StageOrder, t: pd.Timestamp) -> pd.DataFrame:
    """The finished stays in open stages, as known at t, of deals won by t, with the days from
    entering the stage to the win. Per deal, so a history read piece by piece gives the same rows."""
    hist = history[history["entered_at"] <= t]
    s = stays(hist, stages, t)
    won_at = hist[hist["stage"] == stages.config.won].groupby("opportunity_id")["entered_at"].last()
    s = s[s["open_stage"] & s["done"]]
    won = won_at.reindex(s["opportunity_id"]).set_axis(s.index)  # not .map: an empty Series (no win among these deals) maps to float
    s = s.assign(to_win=(won - s["entered_at"]) / pd.Timedelta(days=1))
    return s.loc[s["to_win"].notna() & (s["to_win"] >= s["days"]), ["opportunity_id", "stage", "days", "to_win"]]  # what the pools read: at 3M deals, every won stay is held at once


def _thinned(days: np.ndarray, to_win: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` of a pool's won stays (sorted by length): evenly spaced along the sorted
    stays, the shortest and the longest kept, so the lengths' distribution and its tail stay."""
    if len(days) <= limit:
        return days, to_win
    keep = np.unique(np.linspace(0, len(days) - 1, limit).round().astype(np.int64))
    return days[keep], to_win[keep]


def _every_stage(pools: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pool of last resort: every stage's pool together, by length (what a bundle's timing
    frame gives back, so a fitted and a loaded timing draw alike)."""
    every = [pool for (_, band), pool in sorted(pools.items(), key=lambda kv: str(kv[0][0])) if band is None]
    if not every:
        return np.array([0.0]), np.array([30.0])
    days, to_win = np.concatenate([p[0] for p in every]), np.concatenate([p[1] for p in every])
    order = np.argsort(days, kind="stable")
    return days[order], to_win[order]


class _Amounts:
    """Each deal's amount by its id, from the opportunities sorted by id once: a lookup of a
    few deals at a time by binary search, with no hash table of every deal (3M ids at 3M
    deals). A deal missing from the opportunities has no amount (NaN)."""

    def __init__(self, opps: pd.DataFrame) -> None:
        ids = opps["opportunity_id"].to_numpy(dtype=object)
        order = np.argsort(ids, kind="stable")
        self.ids, self.amounts = ids[order], opps["amount"].to_numpy(dtype=float)[order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if not len(self.ids):
            return np.full(len(ids), np.nan)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[at] == ids, self.amounts[at], np.nan)


@dataclass
class TimeToWin:
    """For deals won by the fit time: per stage and deal-size band, how long they stayed in the
    stage and how long from entering it to the win. A deal that has sat d days in a stage is
    compared with won deals of its size whose stay there lasted at least d days (not with deals
    that took d days in total); big deals take longer everywhere, so size is not left out."""

    bands: int = 3
    min_pool: int = 20
    max_pool: int = MAX_POOL

    def fit(self, tables: Tables, stages: StageOrder, t: pd.Timestamp) -> TimeToWin:
        t = to_utc(t)
        opps = tables.opportunities.loc[tables.opportunities["created_at"] <= t, ["opportunity_id", "amount"]]  # the deals known at t (Tables.as_of)
        amount_of = _Amounts(opps)
        # each stage's won stays as plain arrays, read a few deals at a time: at 3M deals, every
        # stay in one frame with its deal's id, an id lookup of every deal and a grouping of
        # millions of rows took the client 0.9 GiB up, its peak of the whole training run
        stays_of: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for part in by_deals(tables.stage_history):
            s = _won_stays(part, stages, t)
            days, to_win, amount = s["days"].to_numpy(dtype=float), s["to_win"].to_numpy(dtype=float), amount_of(s["opportunity_id"].to_numpy(dtype=object))
            for stage, rows in s.groupby("stage", sort=False).indices.items():
                stays_of.setdefault(stage, []).append((days[rows], to_win[rows], amount[rows]))
        amounts = [a for pieces in stays_of.values() for _, _, a in pieces]
        self.edges_ = np.unique(np.quantile(np.concatenate(amounts), np.linspace(0, 1, self.bands + 1)[1:-1])) if amounts else np.array([])
        banded, whole = {}, {}
        for stage in sorted(stays_of):
            days, to_win, amount = (np.concatenate(column) for column in zip(*stays_of.pop(stage), strict=True))
            # the rows' order decides which a draw picks: by length, then deal (not the
            # export's order). The pieces come in deal order, as `Tables` keeps the history,
            # so a stable sort by length alone gives it, with no sort of millions of id strings
            order = np.argsort(days, kind="stable")
            days, to_win, band = days[order], to_win[order], np.searchsorted(self.edges_, amount[order], side="right")
            for b in np.unique(band):
                banded[(stage, int(b))] = _thinned(days[band == b], to_win[band == b], self.max_pool)
            whole[(stage, None)] = _thinned(days, to_win, self.max_pool)
        self.pools_ = {**banded, **whole}
        self.all_ = _every_stage(self.pools_)
        return self

    def to_frame(self) -> pd.DataFrame:
        rows = [pd.DataFrame({"stage": k[0], "band": -1 if k[1] is None else k[1], "days": v[0], "to_win": v[1]}) for k, v in self.pools_.items()]
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["stage", "band", "days", "to_win"])
        return frame.assign(edges=json.dumps(self.edges_.tolist()))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TimeToWin:
        ttw = cls()
        ttw.edges_ = np.array(json.loads(frame["edges"].iloc[0])) if len(frame) else np.array([])
        ttw.pools_ = {(stage, None if band == -1 else int(band)): (g["days"].to_numpy(), g["to_win"].to_numpy()) for (stage, band), g in frame.groupby(["stage", "band"])}
        ttw.all_ = _every_stage(ttw.pools_)
        return ttw

    def _pool(self, stage: str, band: int) -> tuple[np.ndarray, np.ndarray]:
        for key in ((stage, band), (stage, None)):
            pool = self.pools_.get(key)
            if pool is not None and len(pool[0]) >= self.min_pool:
                return pool
        return self.all_

    def sample(self, stage: np.ndarray, dwell: np.ndarray, amount: np.ndarray, rng: np.random.Generator, sims: int) -> np.ndarray:
        """Remaining days to a win, per deal and simulation (deals × sims): each deal draws from
        the comparable won deals whose stay lasted at least as long as its own so far (at least
        the five longest stays, when it has outlasted nearly all of them)."""
        out = np.empty((len(stage), sims))
        band = np.searchsorted(self.edges_, amount, side="right")
        # groups in a fixed order: each consumes draws from rng, and a set's order changes with
        # PYTHONHASHSEED from one process to the next
        for name, b in sorted({(str(n), int(k)) for n, k in zip(stage, band, strict=True)}):
            rows = np.flatnonzero((stage == name) & (band == b))
            stay, to_win = self._pool(name, b)
            first = np.minimum(np.searchsorted(stay, dwell[rows]), max(len(stay) - 5, 0))
            span = len(stay) - first
            pick = first[:, None] + (rng.random((len(rows), sims)) * span[:, None]).astype(np.int64)
            # from now: the comparable deal's time to win less the part of its stay already behind
            # this one (all of its stay, when this deal has outlasted it)
            out[rows] = to_win[pick] - np.minimum(stay[pick], dwell[rows, None])
        return np.maximum(out, 0.0)


@dataclass
class Forecast:
    period: tuple[pd.Timestamp, pd.Timestamp]
    as_of: pd.Timestamp
    open_deals: int
    pipeline_amount: float
    methods: pd.DataFrame  # method, expected, p10, p50, p90


def simulate(amount: np.ndarray, p_win: np.ndarray, remaining: np.ndarray, start_days: float, end_days: float, rng: np.random.Generator) -> np.ndarray:
    """Won amount per simulation: a deal counts if it wins and the win lands in the period."""
    wins = rng.random(remaining.shape) < p_win[:, None]
    inside = (remaining >= start_days) & (remaining < end_days)
    return (amount[:, None] * (wins & inside)).sum(axis=0)


def forecast(
    tables: Tables,
    stages: StageOrder,
    period: tuple[pd.Timestamp, pd.Timestamp],
    methods: dict[str, Method],
    as_of: pd.Timestamp,
    seed: int = 0,
    sims: int = SIMS,
    timing: TimeToWin | None = None,
) -> Forecast:
    """Forecast from the pipeline open at as_of. timing: learned elsewhere (the bundle's), when
    the tables hold only open deals."""
    start, end = period
    t = to_utc(as_of)
    known = tables.as_of(t, stages)
    points = open_points(known, stages, t).sort_values("opportunity_id", kind="stable").reset_index(drop=True)  # draws follow the deals' order
    state = stage_state(known, stages, points)
    amount = points["opportunity_id"].map(known.opportunities.set_index("opportunity_id")["amount"]).to_numpy(dtype=float)
    stage = state["stage_now"].to_numpy(dtype=object)
    dwell = ((t - state["entered_at"]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    timing = timing if timing is not None else TimeToWin().fit(tables, stages, t)
    remaining = timing.sample(stage, dwell, amount, rng, sims)
    start_d, end_d = (start - t) / pd.Timedelta(days=1), (end - t) / pd.Timedelta(days=1)
    rows = []
    for name, method in methods.items():
        p = np.clip(np.nan_to_num(method(known, points, t), nan=0.0), 0, 1)
        totals = simulate(amount, p, remaining, start_d, end_d, np.random.default_rng(seed + 1))
        rows.append({"method": name, "expected": float(totals.mean()), "p10": float(np.quantile(totals, 0.1)),
                     "p50": float(np.quantile(totals, 0.5)), "p90": float(np.quantile(totals, 0.9))})
    return Forecast(period, t, len(points), float(amount.sum()), pd.DataFrame(rows))


def actual_won(tables: Tables, stages: StageOrder, period: tuple[pd.Timestamp, pd.Timestamp], t: pd.Timestamp) -> float:
    """Amount won inside the period by deals that were open at t (what the forecast covers)."""
    start, end = period
    open_ids = open_points(tables.as_of(t, stages), stages, t)["opportunity_id"]
    h = tables.stage_history
    won = h[(h["stage"] == stages.config.won) & (h["entered_at"] >= start) & (h["entered_at"] < end) & h["opportunity_id"].isin(open_ids)]
    amounts = tables.opportunities.set_index("opportunity_id")["amount"]
    return float(amounts.reindex(won["opportunity_id"].unique()).sum())


def configured_method(stages: StageOrder) -> Method | None:
    if not stages.config.configured_weights:
        return None
    weights = dict(zip(stages.open, stages.config.configured_weights, strict=True))
    return lambda tables, points, t: stage_state(tables, stages, points)["stage_now"].map(weights).to_numpy(dtype=float)


def stage_weight_method(stages: StageOrder) -> Method:
    """Data-driven weights fitted as of t (so a backtest never reads its own future)."""

    def method(tables: Tables, points: pd.DataFrame, t: pd.Timestamp) -> np.ndarray:
        sw = StageWeights().fit(tables, stages, t)
        state = stage_state(tables, stages, points)
        return sw.weight_for(state["stage_now"], (t - state["entered_at"]) / pd.Timedelta(days=1))

    return method


def model_method(bundle) -> Method:
    """The model's calibrated win probability (the champion bundle's own statistics)."""
    from scoring.score import score_points

    def method(tables: Tables, points: pd.DataFrame, t: pd.Timestamp) -> np.ndarray:
        return score_points(bundle, tables, points, with_factors=False)["win_probability"].to_numpy()

    return method


def fitted_weight_method(stages: StageOrder, weights: StageWeights) -> Method:
    """Weights learned once (the bundle's), for a request that carries only open deals."""

    def method(tables: Tables, points: pd.DataFrame, t: pd.Timestamp) -> np.ndarray:
        state = stage_state(tables, stages, points)
        return weights.weight_for(state["stage_now"], (t - state["entered_at"]) / pd.Timedelta(days=1))

    return method


def methods_for(stages: StageOrder, bundle=None, learned_weights: bool = False) -> dict[str, Method]:
    """configured, data-driven and model methods; learned_weights: use the bundle's weights
    rather than refitting them from the tables as of each forecast time."""
    found: dict[str, Method] = {}
    configured = configured_method(stages)
    if configured is not None:
        found["configured weights"] = configured
    if learned_weights and bundle is not None:
        found["data-driven stage weights"] = fitted_weight_method(stages, StageWeights.from_dict(bundle.stage_weights))
    else:
        found["data-driven stage weights"] = stage_weight_method(stages)
    if bundle is not None:
        found["model"] = model_method(bundle)
    return found


def backtest(
    tables: Tables,
    stages: StageOrder,
    methods: dict[str, Method],
    periods: int = 6,
    freq: str = "M",
    seed: int = 0,
    sims: int = 2000,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The last `periods` complete periods before `end` (the export's), each forecast as of its
    start and set against the actual. `end` stands in for tables without their activities."""
    end = end if end is not None else tables.end
    last_full = pd.Period(end.tz_localize(None), freq=freq) - 1
    rows = []
    for k in range(periods - 1, -1, -1):
        p = last_full - k
        start, end = to_utc(p.start_time), to_utc((p + 1).start_time)
        f = forecast(tables, stages, (start, end), methods, as_of=start, seed=seed, sims=sims)
        actual = actual_won(tables, stages, (start, end), start)
        for r in f.methods.itertuples():
            rows.append({"period": str(p), "method": r.method, "expected": r.expected, "p10": r.p10, "p90": r.p90, "actual": actual,
                         "error": r.expected - actual, "inside": bool(r.p10 <= actual <= r.p90)})
    return pd.DataFrame(rows)


def backtest_summary(bt: pd.DataFrame) -> pd.DataFrame:
    g = bt.groupby("method")
    return pd.DataFrame(
        {
            "periods": g.size(),
            "mean_abs_error": g["error"].apply(lambda e: e.abs().mean()),
            "mean_abs_pct_error": g.apply(lambda d: (d["error"].abs() / d["actual"].where(d["actual"] > 0)).mean(), include_groups=False),
            "bias": g["error"].mean(),
            "p10_p90_coverage": g["inside"].mean(),
        }
    ).reset_index()
