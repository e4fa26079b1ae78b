"""Statistics learned from other opportunities, as step functions of time.

A segment's win rate at t may use only deals closed at or before t. Rather than recompute it
for every snapshot, we keep the running counts as a table of (key, time, won, closed) steps
and look each query up with an as-of join: exact for any t, vectorised, and small enough to
travel in the model bundle so that the API computes the same numbers as the batch.

Closing is an event stream, not a flag: entering won or lost adds one, re-opening takes it
back, so a deal lost and won back counts as lost only while it was lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from features import asof
from features.stages import StageOrder
from features.stays import stays
from features.tables import Tables
from features.times import ns

GLOBAL = "__all__"
MISSING = "(missing)"


def _key_values(values: pd.Series | np.ndarray) -> np.ndarray:
    """Key values as text, missing ones as MISSING: how they were counted at fit time."""
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    return np.where(missing, MISSING, values.astype(str)).astype(object) if len(values) else values


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
        return self.fit_events(*self.events(tables, stages))

    def events(self, tables: Tables, stages: StageOrder) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What the statistics are made of, per deal: its closing events (with the value of every
        key) and its completed stays. Deals do not mix here, so a partitioned export's events
        are its partitions' events put together (`fit_events` on their concatenation)."""
        hist = tables.stage_history
        idx = stages.index(hist["stage"])
        same = hist["opportunity_id"].eq(hist["opportunity_id"].shift())
        won = (idx == stages.won_index).astype(np.int64)
        closed = ((idx == stages.won_index) | (idx < 0)).astype(np.int64)
        prev_won = np.where(same, np.roll(won, 1), 0)
        prev_closed = np.where(same, np.roll(closed, 1), 0)
        events = pd.DataFrame(
            {"opportunity_id": hist["opportunity_id"], "time": hist["entered_at"], "d_won": won - prev_won, "d_closed": closed - prev_closed}
        )
        events = events[(events["d_won"] != 0) | (events["d_closed"] != 0)]
        opps = tables.opportunities.set_index("opportunity_id")
        for key in self.keys:
            if key in opps.columns:
                events[f"key:{key}"] = np.asarray(_key_values(events["opportunity_id"].map(opps[key])), dtype=object)
        # completed stays in open stages: known when the next stage is entered
        done = stays(hist, stages, tables.end)
        done = done[done["done"] & done["open_stage"]]
        completed = pd.DataFrame({"stage": done["stage"].astype(str), "time": done["ended_at"], "log_days": np.log1p(done["days"].to_numpy())})
        return events.drop(columns="opportunity_id").reset_index(drop=True), completed.reset_index(drop=True)

    def fit_events(self, events: pd.DataFrame, completed: pd.DataFrame) -> PointInTimeStats:
        """Running counts from `events` (every deal's, in any order: at equal times a lookup
        reads the count after all of them). Keys and values are held as categories, counts as
        int32: one row per key and closing event, millions at a million deals."""
        events = events.iloc[np.argsort(ns(events["time"]), kind="stable")].reset_index(drop=True)
        keys = [k for k in [GLOBAL, *self.keys] if k == GLOBAL or f"key:{k}" in events.columns]
        values, won, closed = [], [], []
        for key in keys:
            codes, uniques = (np.zeros(len(events), dtype=np.int64), [GLOBAL]) if key == GLOBAL else pd.factorize(events[f"key:{key}"])
            grouped = events[["d_won", "d_closed"]].groupby(codes, sort=False)
            values.append(pd.Categorical.from_codes(codes, categories=uniques))
            won.append(grouped["d_won"].cumsum().to_numpy(dtype=np.int32))
            closed.append(grouped["d_closed"].cumsum().to_numpy(dtype=np.int32))
        self.win_steps_ = pd.DataFrame(
            {
                "key": pd.Categorical.from_codes(np.repeat(np.arange(len(keys)), len(events)), categories=keys),
                "value": union_categoricals(values),
                "time": pd.concat([events["time"]] * len(keys), ignore_index=True),
                "won": np.concatenate(won),
                "closed": np.concatenate(closed),
            }
        )
        stays_ = completed.sort_values("time", kind="stable")
        grouped = stays_.groupby("stage", sort=False)
        stays_ = stays_.assign(n=grouped.cumcount() + 1, sum_log=grouped["log_days"].cumsum())
        self.dwell_steps_ = stays_[["stage", "time", "n", "sum_log"]].reset_index(drop=True)
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
