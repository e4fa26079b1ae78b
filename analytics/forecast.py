"""Forecast of won amount in a period, with a P10–P90 range, by three methods side by side.

Each open deal is simulated: does it win (with the method's probability) and, if so, when? The
"when" is drawn from how long deals won by the forecast time took to their win from dates at
which they were open in the same stage, with about as many days there as this deal has
(`TimeToWin`). Summing the simulated wins that land inside the period gives the range.

Methods: the CRM's configured stage weights (when the config has them), the data-driven stage
weights (lowered by dwell), and the model's win probability. A backtest replays past periods
as of their start and compares each method with what was actually won.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from analytics.stage_weights import StageWeights
from features.asof import positions
from features.errors import InputInvalid
from features.frame import open_points, stage_state
from features.stages import StageOrder
from features.tables import Tables
from features.times import DAY_NS, ns, to_utc

SIMS = 4000
# snapshots kept per (stage, size band) pool: a quantile of days to a win needs a few thousand,
# and the bundle carries the pools to the service
MAX_POOL = 5000
Method = Callable[[Tables, pd.DataFrame, pd.Timestamp], np.ndarray]  # (tables at t, open deals, t) → P(win)




PERIODS_SAID = "a month (2026-10), a quarter (2026Q4), a year (2026) from 1970 to 2199, or next-Nd (next-30d: N days from as_of, N from 1 to 9999)"
PERIOD_PATTERN = r"^((19[7-9]\d|2[01]\d\d)(-(0[1-9]|1[0-2])|[Qq][1-4])?|next-[1-9]\d{0,3}d)$"  # exactly what parse_period reads


class PeriodInvalid(InputInvalid):
    """A period that is not one of the forms read; the message says which are (no option name:
    the command line and the API each say where it was given)."""


def parse_period(text: str, as_of: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """'2026-10' (a month), '2026Q4' (a quarter), '2026' (a year) or 'next-30d' (from as_of)."""
    text = text.strip()
    if not re.fullmatch(PERIOD_PATTERN, text):
        raise PeriodInvalid(f"found {text!r}, expected {PERIODS_SAID}")
    if text.startswith("next-"):
        start = to_utc(as_of)
        return start, start + pd.Timedelta(days=int(text[5:-1]))  # within 27 years of a time before 2200: nanoseconds hold it
    freq = "Q" if "Q" in text.upper() else ("Y" if len(text) == 4 else "M")
    p = pd.Period(text.upper(), freq=freq)
    return to_utc(p.start_time), to_utc((p + 1).start_time)


def _thinned(days: np.ndarray, to_win: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` of a pool's entries (sorted by days in stage): evenly spaced along them,
    the first and the last kept, so the distribution and its tail stay."""
    if len(days) <= limit:
        return days, to_win
    keep = np.unique(np.linspace(0, len(days) - 1, limit).round().astype(np.int64))
    return days[keep], to_win[keep]


def _every_stage(pools: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pool of last resort: every stage's pool together, by days in stage (what a bundle's
    timing frame gives back, so a fitted and a loaded timing draw alike)."""
    every = [pool for (_, band), pool in sorted(pools.items(), key=lambda kv: str(kv[0][0])) if band is None]
    if not every:
        return np.array([0.0]), np.array([30.0])
    days, to_win = np.concatenate([p[0] for p in every]), np.concatenate([p[1] for p in every])
    order = np.argsort(days, kind="stable")
    return days[order], to_win[order]


def _won_snapshots(tables: Tables, stages: StageOrder, t: pd.Timestamp, every_days: int, max_won: int) -> pd.DataFrame:
    """The weekly snapshots, as known at t, of deals won by t (at most `max_won` of them, whole
    deals by a stable hash), with the stage each was in, its days there, its amount and the days
    to the deal's first win after the snapshot."""
    from features.snapshots import snapshot_points

    opps = tables.opportunities.loc[tables.opportunities["created_at"] <= t, ["opportunity_id", "created_at", "amount"]]
    hist = tables.stage_history
    wins = hist.loc[(hist["stage"] == stages.config.won) & (hist["entered_at"] <= t), ["opportunity_id", "entered_at"]]
    won_ids = pd.unique(wins["opportunity_id"].to_numpy(dtype=object))
    if len(won_ids) > max_won:  # a distribution of days: tens of thousands of deals learn it
        won_ids = won_ids[_about(pd.Series(won_ids, dtype=object), max_won)]
    mine = pd.Index(won_ids, dtype=object)
    sub = Tables(opps[opps["opportunity_id"].isin(mine)].reset_index(drop=True),
                 hist[hist["opportunity_id"].isin(mine) & (hist["entered_at"] <= t)].reset_index(drop=True))
    points = snapshot_points(sub, stages, every_days=every_days, until=t)
    if points.empty:
        return pd.DataFrame(columns=["stage", "days", "to_win", "amount", "as_of"])
    state = stage_state(sub, stages, points)
    wins = wins[wins["opportunity_id"].isin(mine)]
    won_ns = ns(wins["entered_at"])
    at = positions(wins["opportunity_id"].to_numpy(dtype=object), won_ns, points["opportunity_id"].to_numpy(dtype=object), ns(points["as_of"]), direction="forward", exact=False)
    to_win = np.where(at >= 0, (won_ns[np.maximum(at, 0)] - ns(points["as_of"])) / DAY_NS, np.nan) if len(won_ns) else np.full(len(points), np.nan)
    frame = pd.DataFrame({
        "stage": state["stage_now"].to_numpy(dtype=object),
        "days": ((points["as_of"] - state["entered_at"]) / pd.Timedelta(days=1)).to_numpy(dtype=float),
        "to_win": to_win,
        "amount": points["opportunity_id"].map(sub.opportunities.set_index("opportunity_id")["amount"]).to_numpy(dtype=float),
        "as_of": points["as_of"].to_numpy(),
    })
    return frame[np.isfinite(frame["to_win"]) & frame["stage"].isin(stages.open)].reset_index(drop=True)


@dataclass
class TimeToWin:
    """When a deal that will be won is won: from the weekly snapshots of deals won by the fit
    time, how many days each took to its win from a date at which it was open, by the stage it
    was in then, its days in that stage (nearest first) and its size band (big deals take
    longer everywhere). Snapshots, not stages' stays: a deal open at a date is one of those
    open at dates, and where wins are entered at their last stage days before they close
    (after the fact), won stays are mostly those days, while the deals that are open at a date
    and win later take weeks.

    With `horizon_days` H (the model's win label: won within H days), the snapshots followed for
    H at least, and their wins within H: the days to a win given a win within H, which nothing
    after the fit time can shorten (a snapshot's deal that wins later than its follow-up is not
    among the won yet, so a young export's newest snapshots hold only fast wins). Without, the
    snapshots followed FOLLOW_DAYS at least, when there are enough."""

    bands: int = 3
    min_pool: int = 20
    max_pool: int = MAX_POOL
    every_days: int = 7
    near: int = 40  # snapshots nearest in days in stage that a deal draws from
    max_won: int = 50_000
    basis: str = "snapshots"  # "stays": a bundle's timing fitted before snapshots were (read back only)

    def fit(self, tables: Tables, stages: StageOrder, t: pd.Timestamp, horizon_days: int | None = None) -> TimeToWin:
        t = to_utc(t)
        won = _won_snapshots(tables, stages, t, self.every_days, self.max_won)
        followed = won["as_of"] <= t - pd.Timedelta(days=horizon_days or FOLLOW_DAYS)
        if horizon_days is not None:
            followed &= won["to_win"] <= horizon_days
        if followed.sum() >= (self.min_pool if horizon_days is not None else MIN_FOLLOWED):
            won = won[followed]
        amounts = won["amount"].to_numpy(dtype=float)
        self.edges_ = np.unique(np.quantile(amounts, np.linspace(0, 1, self.bands + 1)[1:-1])) if len(amounts) else np.array([])
        banded, whole = {}, {}
        for stage, part in sorted(won.groupby("stage", sort=False), key=lambda kv: str(kv[0])):
            part = part.sort_values(["days", "to_win"], kind="stable")
            days, to_win = part["days"].to_numpy(dtype=float), part["to_win"].to_numpy(dtype=float)
            band = np.searchsorted(self.edges_, part["amount"].to_numpy(dtype=float), side="right")
            for b in np.unique(band):
                banded[(stage, int(b))] = _thinned(days[band == b], to_win[band == b], self.max_pool)
            whole[(stage, None)] = _thinned(days, to_win, self.max_pool)
        self.pools_ = {**banded, **whole}
        self.all_ = _every_stage(self.pools_)
        return self

    def to_frame(self) -> pd.DataFrame:
        rows = [pd.DataFrame({"stage": k[0], "band": -1 if k[1] is None else k[1], "days": v[0], "to_win": v[1]}) for k, v in self.pools_.items()]
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["stage", "band", "days", "to_win"])
        return frame.assign(edges=json.dumps(self.edges_.tolist()), basis=self.basis)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TimeToWin:
        ttw = cls(basis=str(frame["basis"].iloc[0]) if "basis" in frame.columns and len(frame) else "stays")
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
        the `near` snapshots of comparable won deals nearest to it in days in stage."""
        out = np.empty((len(stage), sims))
        band = np.searchsorted(self.edges_, amount, side="right")
        # groups in a fixed order: each consumes draws from rng, and a set's order changes with
        # PYTHONHASHSEED from one process to the next
        for name, b in sorted({(str(n), int(k)) for n, k in zip(stage, band, strict=True)}):
            rows = np.flatnonzero((stage == name) & (band == b))
            days, to_win = self._pool(name, b)
            if self.basis == "stays":  # won stays at least as long as this deal's, less what is behind it
                first = np.minimum(np.searchsorted(days, dwell[rows]), max(len(days) - 5, 0))
                span = len(days) - first
                pick = first[:, None] + (rng.random((len(rows), sims)) * span[:, None]).astype(np.int64)
                out[rows] = to_win[pick] - np.minimum(days[pick], dwell[rows, None])
                continue
            width = min(self.near, len(days))
            first = np.clip(np.searchsorted(days, dwell[rows]) - width // 2, 0, len(days) - width)
            pick = first[:, None] + (rng.random((len(rows), sims)) * width).astype(np.int64)
            out[rows] = to_win[pick]
        return np.maximum(out, 0.0)


FOLLOW_DAYS = 90
MIN_FOLLOWED = 200


@dataclass
class Forecast:
    period: tuple[pd.Timestamp, pd.Timestamp]
    as_of: pd.Timestamp
    open_deals: int
    pipeline_amount: float
    methods: pd.DataFrame  # method, expected, p10, p50, p90
    level: dict | None = None  # the level's month-to-month spread the range carries (`level_spread`)


def simulate(amount: np.ndarray, p_win: np.ndarray, remaining: np.ndarray, start_days: float, end_days: float, rng: np.random.Generator,
             spread: float = 0.0) -> np.ndarray:
    """Won amount per simulation: a deal counts if it wins and the win lands in the period. Each
    simulation first draws the period's level, a shift of every deal's log-odds by a normal of
    sd `spread` (`level_spread`): deals of one period win or lose together as the market moves,
    which independent draws alone would call impossible."""
    shift = rng.normal(0.0, spread, remaining.shape[1]) if spread > 0 else np.zeros(remaining.shape[1])
    p = np.clip(p_win, 0.0, 1.0)[:, None]
    moved = expit(logit(np.clip(p, 1e-9, 1 - 1e-9)) + shift[None, :]) if spread > 0 else p
    wins = rng.random(remaining.shape) < np.where((p > 0) & (p < 1), moved, p)
    inside = (remaining >= start_days) & (remaining < end_days)
    return (amount[:, None] * (wins & inside)).sum(axis=0)


SPREAD_PRIOR = 0.25  # sd of a month's level on the logit (about ±28 %) before an export's own months say otherwise
PRIOR_MONTHS = 2  # how many months' worth of evidence that prior counts for
SPREAD_MONTHS = 12


def _about(ids: pd.Series, limit: int) -> np.ndarray:
    """Which of the ids a sample of about `limit` keeps: by a stable hash, the same every run."""
    return (pd.util.hash_pandas_object(ids, index=False).to_numpy() % 10_000) < limit / len(ids) * 10_000


def _sampled(tables: Tables, deals: int) -> Tables:
    """The records and stage history of about `deals` deals (whole deals, by a stable hash of
    their ids): what a share of open deals needs, read on a sample of a large export."""
    ids = tables.opportunities["opportunity_id"]
    if len(ids) <= deals:
        return tables
    keep = ids[_about(ids, deals)]
    hist = tables.stage_history
    return Tables(tables.opportunities[ids.isin(keep)].reset_index(drop=True), hist[hist["opportunity_id"].isin(keep)].reset_index(drop=True))


SPREAD_DEALS = 50_000  # deals the month's shares are measured on, at most (a sample of whole deals by a stable hash)


def level_spread(tables: Tables, stages: StageOrder, t: pd.Timestamp) -> dict:
    """How far the share of open deals won within the month moved from one month to the next in
    the export as known at t (the last SPREAD_MONTHS complete months), on the logit, beyond what
    the months' own numbers of deals explain (binomial noise), held toward SPREAD_PRIOR by
    PRIOR_MONTHS months: the level's own uncertainty, which a forecast's range carries. A young
    org's share moves by 2x from month to month (issue 40): a range of independent deals alone
    held the amount won in 1 of 4 months."""
    t = to_utc(t)
    last = pd.Period(t.tz_localize(None), freq="M") - 1
    starts = [last - k for k in range(SPREAD_MONTHS - 1, -1, -1)]
    tables = _sampled(tables, SPREAD_DEALS)
    wins = tables.stage_history.loc[tables.stage_history["stage"] == stages.config.won, ["opportunity_id", "entered_at"]]
    shares = []
    for month in starts:
        begin, end = to_utc(month.start_time), to_utc((month + 1).start_time)
        if end > t:
            continue
        ids = open_points(tables, stages, begin)["opportunity_id"]
        if len(ids) < 20:
            continue
        won = wins[(wins["entered_at"] >= begin) & (wins["entered_at"] < end) & wins["opportunity_id"].isin(ids)]["opportunity_id"].nunique()
        share = (won + 0.5) / (len(ids) + 1.0)
        shares.append((float(logit(share)), 1.0 / (len(ids) * share * (1 - share))))
    moves = [(b[0] - a[0]) ** 2 - a[1] - b[1] for a, b in zip(shares, shares[1:], strict=False)]
    measured = max(float(np.mean(moves)), 0.0) if moves else None
    variance = ((len(moves) * measured if moves else 0.0) + PRIOR_MONTHS * SPREAD_PRIOR**2) / (len(moves) + PRIOR_MONTHS)
    return {"spread": float(np.sqrt(variance)), "months": len(shares), "measured": None if measured is None else float(np.sqrt(measured))}


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
    horizon = next((h for h in (getattr(m, "horizon_days", None) for m in methods.values()) if h is not None), None)
    timing = timing if timing is not None else TimeToWin().fit(tables, stages, t, horizon)
    remaining = timing.sample(stage, dwell, amount, rng, sims)
    start_d, end_d = (start - t) / pd.Timedelta(days=1), (end - t) / pd.Timedelta(days=1)
    spread = level_spread(known, stages, t) if timing is None else {"spread": SPREAD_PRIOR, "months": 0, "measured": None}  # open deals alone show no past month
    rows = []
    for name, method in methods.items():
        p = np.clip(np.nan_to_num(method(known, points, t), nan=0.0), 0, 1)
        horizon = getattr(method, "horizon_days", None)
        if horizon is not None:  # P(won within H): as a chance to win at all, by the share of the deal's timing draws within H
            within = np.maximum((remaining <= horizon).mean(axis=1), MIN_WITHIN)
            p = np.clip(p / within, 0, 1)
        totals = simulate(amount, p, remaining, start_d, end_d, np.random.default_rng(seed + 1), spread["spread"])
        rows.append({"method": name, "expected": float(totals.mean()), "p10": float(np.quantile(totals, 0.1)),
                     "p50": float(np.quantile(totals, 0.5)), "p90": float(np.quantile(totals, 0.9))})
    return Forecast(period, t, len(points), float(amount.sum()), pd.DataFrame(rows), spread)


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


MIN_WITHIN = 0.5  # the share of a deal's timing draws within the label's horizon, at least (it covers most wins by construction)


@dataclass(frozen=True)
class ModelMethod:
    """The model's calibrated chance of a win within `horizon_days` of the date, which the
    forecast spreads over time with a timing of wins within that horizon (`forecast`)."""

    bundle: object
    horizon_days: int | None

    def __call__(self, tables: Tables, points: pd.DataFrame, t: pd.Timestamp) -> np.ndarray:
        from scoring.score import score_points

        return score_points(self.bundle, tables, points, with_factors=False)["win_probability"].to_numpy()


def model_method(bundle) -> Method:
    return ModelMethod(bundle, win_horizon_days(bundle))


def win_horizon_days(bundle) -> int | None:
    """The days within which the bundle's win probability counts a win (None: a bundle trained
    before the label had a horizon, whose probability is of a win at all)."""
    return bundle.win_label.horizon_days if bundle.win_label is not None else None


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
    """Each method's record over the replayed periods, best first (the lowest mean absolute error)."""
    g = bt.groupby("method", sort=False)
    summary = pd.DataFrame(
        {
            "periods": g.size(),
            "mean_abs_error": g["error"].apply(lambda e: e.abs().mean()),
            "mean_abs_pct_error": g.apply(lambda d: (d["error"].abs() / d["actual"].where(d["actual"] > 0)).mean(), include_groups=False),
            "bias": g["error"].mean(),
            "expected_over_actual": g["expected"].mean() / g["actual"].mean().where(g["actual"].mean() > 0),
            "p10_p90_coverage": g["inside"].mean(),
        }
    ).reset_index()
    return summary.sort_values("mean_abs_error", kind="stable").reset_index(drop=True)


FAR = 2.0  # a method whose replayed forecasts were, on average, this many times what was won (or 1/this) missed by far
MIN_PERIODS = 3  # periods replayed before a method's record is said


def verdict(summary: pd.DataFrame) -> list[str]:
    """What the backtest says in words: the method that did best, and each one whose own record
    shows it missing by far, so that nobody plans on a range that never held."""
    said: list[str] = []
    if summary.empty or summary["periods"].max() < MIN_PERIODS:
        return said
    best = summary.iloc[0]
    said.append(f"best on the last {int(best['periods'])} periods: {best['method']} (off by {best['mean_abs_error']:,.0f} on average; "
                f"its P10–P90 held the won amount in {best['p10_p90_coverage']:.0%} of them)")
    for row in summary.itertuples():
        ratio = row.expected_over_actual
        if row.periods >= MIN_PERIODS and pd.notna(ratio) and (ratio > FAR or ratio < 1 / FAR):
            said.append(f"{row.method} missed by far in its own backtest: it forecast {ratio:.1f}× what was won on average over {int(row.periods)} periods "
                        f"(P10–P90 held the won amount in {row.p10_p90_coverage:.0%}); do not plan on it here")
    return said


def in_order(methods: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The forecast's methods, the backtest's best first (as given when there is no backtest)."""
    if summary.empty:
        return methods
    rank = {m: k for k, m in enumerate(summary["method"])}
    return methods.assign(_rank=methods["method"].map(rank).fillna(len(rank))).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
