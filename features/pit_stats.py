"""Statistics learned from other opportunities, as step functions of time.

A segment's win rate at t may use only deals closed at or before t. Rather than recompute it
for every snapshot, we keep the running counts as a table of (key, time, won, closed) steps,
one per key value and day its counts changed (a close counts from the end of its day), and
look each query up with an as-of join: vectorised, and small enough to travel in the model
bundle (and to every Dask worker) so that the API computes the same numbers as the batch.

Closing is an event stream, not a flag: entering won or lost adds one, re-opening takes it
back, so a deal lost and won back counts as lost only while it was lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import asof
from features.stages import StageOrder
from features.stays import stays
from features.tables import Tables
from features.times import DAY_NS, from_ns, ns

GLOBAL = "__all__"
MISSING = "(missing)"


def _key_values(values: pd.Series | np.ndarray) -> np.ndarray:
    """Key values as text, missing ones as MISSING: how they were counted at fit time."""
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    return np.where(missing, MISSING, values.astype(str)).astype(object) if len(values) else values


def day_end(times: np.ndarray) -> np.ndarray:
    """The end of each time's UTC day (itself at midnight): when a change the statistics count
    becomes visible. Training and backtest points fall on midnights, where this changes nothing
    (a close at or before midnight d counts at d, as an exact step would); a score during a day
    reads the statistics as they stood at its start."""
    return -(-times // DAY_NS) * DAY_NS


def _as_ns(as_of: pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(as_of, np.ndarray) and as_of.dtype == np.int64:
        return as_of
    return ns(pd.Series(as_of).reset_index(drop=True))


class _Steps:
    """One step table indexed for lookups: values coded, rows sorted by (value, time) once, and
    the final counts per value for queries at or after the last step. Built from the columns'
    arrays (rows in time order): at a million deals the win steps are millions of rows, and a
    sorted or re-typed copy of the table held a second table's worth of memory."""

    def __init__(self, values: pd.Series, times: np.ndarray, counts: dict[str, np.ndarray]) -> None:
        codes, uniques = pd.factorize(values)
        self.values = asof.Codebook(np.asarray(uniques, dtype=object).astype(str))  # text, as queries are
        self.rows = asof.SortedRows(codes, times)
        self.counts = counts
        last = len(codes) - 1 - np.unique(codes[::-1], return_index=True)[1]  # last row of each value
        self.latest = {c: v[last] for c, v in counts.items()}

    def lookup(self, values: np.ndarray, times: np.ndarray, latest: bool) -> dict[str, np.ndarray]:
        """Counts of each value at each time (0 for values never seen); `latest`: every time is
        at or after the last step, so the final counts answer."""
        code = self.values.codes(values)
        if latest:
            return {c: np.where(code >= 0, v[np.maximum(code, 0)], 0.0) for c, v in self.latest.items()}
        pos = self.rows.last_at_or_before(code, times)
        return {c: np.where(pos >= 0, v[np.maximum(pos, 0)], 0.0) for c, v in self.counts.items()}


def _indexed(frame: pd.DataFrame, by: str, cols: list[str]) -> dict[object, _Steps]:
    """A step table's rows of each key (all rows under None when it has no key column). A fit
    lays each key's rows out together in time order; their counts are then read in place (a
    slice), not copied."""
    times = ns(frame["time"])
    order = np.argsort(times, kind="stable")
    keys, names = pd.factorize(frame["key"]) if "key" in frame.columns else (np.zeros(len(frame), dtype=np.int64), [None])
    out = {}
    for k, name in enumerate(names):
        rows = order[keys[order] == k]
        if len(rows) and (np.diff(rows) == 1).all():
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        out[name] = _Steps(frame[by].iloc[rows], times[rows], {c: frame[c].to_numpy()[rows] for c in cols})
    return out


@dataclass
class PointInTimeStats:
    """Running win counts per key value and running dwell per stage; fit learns, lookup reads."""

    keys: list[str]
    shrinkage: float = 20.0

    def fit(self, tables: Tables, stages: StageOrder) -> PointInTimeStats:
        return self.fit_increments(*self.increments(tables, stages))

    def increments(self, tables: Tables, stages: StageOrder) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What the statistics are made of, summed per day: the change in wins and closes of each
        key value (key, value, time, d_won, d_closed) and the completed stays of each stage
        (stage, time, n, sum_log). `time` is the end of the day (int64 ns) the change counts
        from. Deals do not mix here, so a partitioned export's increments are its partitions'
        put together (`fit_increments` on their concatenation)."""
        hist = tables.stage_history
        idx = stages.index(hist["stage"])
        same = hist["opportunity_id"].eq(hist["opportunity_id"].shift()).to_numpy()
        won = (idx == stages.won_index).astype(np.int32)
        closed = ((idx == stages.won_index) | (idx < 0)).astype(np.int32)
        d_won = won - np.where(same, np.roll(won, 1), 0)
        d_closed = closed - np.where(same, np.roll(closed, 1), 0)
        changed = (d_won != 0) | (d_closed != 0)
        base = pd.DataFrame({"time": day_end(ns(hist["entered_at"]))[changed], "d_won": d_won[changed], "d_closed": d_closed[changed]})
        deals = hist["opportunity_id"].to_numpy()[changed]
        opps = tables.opportunities.set_index("opportunity_id")
        keys = [k for k in [GLOBAL, *self.keys] if k == GLOBAL or k in opps.columns]
        pieces = []
        for key in keys:
            values = np.full(len(base), GLOBAL, dtype=object) if key == GLOBAL else _key_values(pd.Series(deals).map(opps[key]))
            summed = base.assign(value=values).groupby(["time", "value"], sort=False)[["d_won", "d_closed"]].sum()
            pieces.append(summed.reset_index())
        wins = pd.concat(pieces, ignore_index=True)
        wins.insert(0, "key", pd.Categorical.from_codes(np.repeat(np.arange(len(keys)), [len(p) for p in pieces]), categories=keys))
        # completed stays in open stages: known when the next stage is entered
        done = stays(hist, stages, tables.end)
        done = done[done["done"] & done["open_stage"]]
        dwell = pd.DataFrame({"stage": done["stage"].astype(str).to_numpy(), "time": day_end(ns(done["ended_at"])), "n": 1, "sum_log": np.log1p(done["days"].to_numpy())})
        dwell = dwell.groupby(["time", "stage"], sort=False).agg(n=("n", "sum"), sum_log=("sum_log", "sum")).reset_index()
        return wins, dwell

    def fit_increments(self, wins: pd.DataFrame, dwell: pd.DataFrame) -> PointInTimeStats:
        """Running counts from daily increments (every deal's, in any order and any number of
        pieces per day): one step per key value and day on which its counts changed, laid out
        key by key in time order. At a million deals that is a few rows per deal for keys with
        a value per few deals (accounts, owners) and a few thousand for the others, where one
        step per closing event was millions for every key."""
        present = set(pd.unique(wins["key"]))
        keys = [k for k in [GLOBAL, *self.keys] if k in present]
        wins = wins.assign(key=pd.Categorical(wins["key"], categories=keys)).dropna(subset=["key"])
        summed = wins.groupby(["key", "time", "value"], sort=True, observed=True)[["d_won", "d_closed"]].sum().reset_index()
        summed = summed[(summed["d_won"] != 0) | (summed["d_closed"] != 0)].reset_index(drop=True)
        running = summed.groupby(["key", "value"], sort=False, observed=True)[["d_won", "d_closed"]].cumsum()
        codes, uniques = pd.factorize(summed["value"])
        self.win_steps_ = pd.DataFrame(
            {
                "key": summed["key"],
                "value": pd.Categorical.from_codes(codes, categories=uniques),
                "time": from_ns(summed["time"].to_numpy()),
                "won": running["d_won"].to_numpy(dtype=np.int32),
                "closed": running["d_closed"].to_numpy(dtype=np.int32),
            }
        )
        summed = dwell.groupby(["time", "stage"], sort=True)[["n", "sum_log"]].sum().reset_index()
        running = summed.groupby("stage", sort=False)[["n", "sum_log"]].cumsum()
        self.dwell_steps_ = pd.DataFrame(
            {"stage": summed["stage"].astype(str), "time": from_ns(summed["time"].to_numpy()), "n": running["n"].to_numpy(dtype=np.int64), "sum_log": running["sum_log"].to_numpy()}
        )
        self._index()
        return self

    # -- lookups -------------------------------------------------------------------------
    def _index(self) -> None:
        """Steps split by key and indexed, built once per fit or load."""
        self._win = _indexed(self.win_steps_, "value", ["won", "closed"])
        dwell = self.dwell_steps_
        self._dwell = _indexed(dwell, "stage", ["n", "sum_log"])[None] if len(dwell) else None
        last = max(self.win_steps_["time"].max(), self.dwell_steps_["time"].max()) if len(self.win_steps_) else None
        self._last_ns = None if last is None or pd.isna(last) else pd.Timestamp(last).value

    def _lookup(self, steps: _Steps | None, values: np.ndarray, as_of: np.ndarray, cols: list[str]) -> dict[str, np.ndarray]:
        if steps is None:
            return {c: np.zeros(len(values)) for c in cols}
        latest = self._last_ns is not None and bool((as_of >= self._last_ns).all())
        return steps.lookup(values, as_of, latest)

    def global_rate(self, as_of: pd.Series | np.ndarray) -> np.ndarray:
        t = _as_ns(as_of)
        got = self._lookup(self._win.get(GLOBAL), np.full(len(t), GLOBAL, dtype=object), t, ["won", "closed"])
        return (got["won"] + 1.0) / (got["closed"] + 2.0)  # Beta(1, 1): an honest 0.5 before any close

    def win_rate(self, key: str, values: pd.Series | np.ndarray, as_of: pd.Series | np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        """The key value's win rate among deals closed by as_of, shrunk toward the global rate."""
        t = _as_ns(as_of)
        prior = self.global_rate(t) if prior is None else prior
        got = self._lookup(self._win.get(key), _key_values(values), t, ["won", "closed"])
        return (got["won"] + self.shrinkage * prior) / (got["closed"] + self.shrinkage)

    def typical_dwell(self, stage: pd.Series | np.ndarray, as_of: pd.Series | np.ndarray) -> np.ndarray:
        """Geometric-mean days that completed stays in this stage took, among those completed by as_of."""
        got = self._lookup(self._dwell, np.asarray(stage, dtype=object), _as_ns(as_of), ["n", "sum_log"])  # missing: no match
        with np.errstate(invalid="ignore", divide="ignore"):
            typical = np.expm1(got["sum_log"] / got["n"])
        return np.where(got["n"] >= 5, typical, np.nan)  # fewer than five stays: not a typical yet

    # -- persistence (the bundle carries these) ------------------------------------------
    def __getstate__(self) -> dict:
        """Pickled (sent to every Dask worker) without the lookup index, which each side builds
        again from the step tables: the index is as large as the tables."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_win", "_dwell", "_last_ns")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "win_steps_" in state:
            self._index()

    def to_frames(self) -> dict[str, pd.DataFrame]:
        return {"win_steps": self.win_steps_, "dwell_steps": self.dwell_steps_}

    @classmethod
    def from_frames(cls, keys: list[str], shrinkage: float, frames: dict[str, pd.DataFrame]) -> PointInTimeStats:
        stats = cls(keys=keys, shrinkage=shrinkage)
        stats.win_steps_ = frames["win_steps"]
        stats.dwell_steps_ = frames["dwell_steps"]
        stats._index()
        return stats
