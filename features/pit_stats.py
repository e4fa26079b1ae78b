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

from features.stages import StageOrder
from features import asof
from features.tables import TS_DTYPE, Tables

GLOBAL = "__all__"
MISSING = "(missing)"
DAY_NS = 86_400 * 10**9


def _key_values(series: pd.Series) -> pd.Series:
    return series.astype("object").where(series.notna(), MISSING).astype(str)


class _Steps:
    """One step table with its join keys and times as arrays, and its final counts per key."""

    def __init__(self, frame: pd.DataFrame, by: str, cols: list[str]) -> None:
        self.frame = frame
        self.keys = frame[by].to_numpy(dtype=object)
        self.times = asof.ns(frame["time"])
        self.latest = frame.groupby(by, sort=False)[cols].last()


@dataclass
class PointInTimeStats:
    """Running win counts per key value and running dwell per stage; fit learns, lookup reads."""

    keys: list[str]
    shrinkage: float = 20.0

    def fit(self, tables: Tables, stages: StageOrder) -> PointInTimeStats:
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
        steps = []
        for key in [GLOBAL, *self.keys]:
            if key == GLOBAL:
                value = pd.Series(GLOBAL, index=events.index)
            elif key in opps.columns:
                value = _key_values(events["opportunity_id"].map(opps[key]))
            else:
                continue
            frame = events.assign(key=key, value=value.to_numpy()).sort_values("time", kind="stable")
            grouped = frame.groupby("value", sort=False)
            frame["won"] = grouped["d_won"].cumsum()
            frame["closed"] = grouped["d_closed"].cumsum()
            steps.append(frame[["key", "value", "time", "won", "closed"]])
        self.win_steps_ = pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(columns=["key", "value", "time", "won", "closed"])

        # completed stays in open stages: known when the next stage is entered
        nxt = hist["entered_at"].shift(-1)
        done = (hist["opportunity_id"].eq(hist["opportunity_id"].shift(-1))) & (idx >= 0) & (idx < stages.n_open)
        stays = pd.DataFrame(
            {
                "stage": hist.loc[done, "stage"].astype(str),
                "time": nxt[done],
                "log_days": np.log1p((nxt[done] - hist.loc[done, "entered_at"]).dt.total_seconds() / 86_400),
            }
        ).sort_values("time", kind="stable")
        grouped = stays.groupby("stage", sort=False)
        stays["n"] = grouped.cumcount() + 1
        stays["sum_log"] = grouped["log_days"].cumsum()
        self.dwell_steps_ = stays[["stage", "time", "n", "sum_log"]].reset_index(drop=True)
        self._index()
        return self

    # -- lookups -------------------------------------------------------------------------
    def _index(self) -> None:
        """Steps split by key, sorted, as arrays, with the latest counts per value, built once
        per fit or load: a query at or after the last step (scoring 'now') is a table read,
        any other an as-of search over arrays."""
        win = self.win_steps_.sort_values("time", kind="stable")
        win = win.assign(value=win["value"].astype(str))
        self._win = {key: _Steps(part.drop(columns="key").reset_index(drop=True), "value", ["won", "closed"]) for key, part in win.groupby("key", sort=False)}
        self._dwell = _Steps(self.dwell_steps_.sort_values("time", kind="stable").reset_index(drop=True), "stage", ["n", "sum_log"])
        self._last_time = max(self.win_steps_["time"].max(), self.dwell_steps_["time"].max()) if len(self.win_steps_) else None

    def _lookup(self, steps: _Steps | None, values: pd.Series, as_of: pd.Series, cols: list[str]) -> pd.DataFrame:
        as_of = pd.to_datetime(as_of, utc=True).astype(TS_DTYPE).reset_index(drop=True)
        values = values.astype(str).reset_index(drop=True)
        if steps is None or steps.frame.empty:
            return pd.DataFrame(0.0, index=range(len(values)), columns=cols)
        if self._last_time is not None and bool((as_of >= self._last_time).all()):
            return steps.latest.reindex(values.to_numpy())[cols].reset_index(drop=True).fillna(0)
        pos = asof.positions(steps.keys, steps.times, values.to_numpy(dtype=object), asof.ns(as_of))
        return asof.take(steps.frame, cols, pos).fillna(0)

    def _win_counts(self, key: str, values: pd.Series, as_of: pd.Series) -> pd.DataFrame:
        return self._lookup(self._win.get(key), values, as_of, ["won", "closed"])

    def global_rate(self, as_of: pd.Series) -> np.ndarray:
        got = self._win_counts(GLOBAL, pd.Series(GLOBAL, index=range(len(as_of))), as_of)
        return ((got["won"] + 1.0) / (got["closed"] + 2.0)).to_numpy()  # Beta(1, 1): an honest 0.5 before any close

    def win_rate(self, key: str, values: pd.Series, as_of: pd.Series, prior: np.ndarray | None = None) -> np.ndarray:
        """The key value's win rate among deals closed by as_of, shrunk toward the global rate."""
        prior = self.global_rate(as_of) if prior is None else prior
        got = self._win_counts(key, _key_values(values), as_of)
        return ((got["won"] + self.shrinkage * prior) / (got["closed"] + self.shrinkage)).to_numpy()

    def typical_dwell(self, stage: pd.Series, as_of: pd.Series) -> np.ndarray:
        """Geometric-mean days that completed stays in this stage took, among those completed by as_of."""
        got = self._lookup(self._dwell, stage, as_of, ["n", "sum_log"])
        with np.errstate(invalid="ignore", divide="ignore"):
            typical = np.expm1(got["sum_log"] / got["n"]).to_numpy()
        return np.where(got["n"].to_numpy() >= 5, typical, np.nan)  # fewer than five stays: not a typical yet

    # -- persistence (the bundle carries these) ------------------------------------------
    def to_frames(self) -> dict[str, pd.DataFrame]:
        return {"win_steps": self.win_steps_, "dwell_steps": self.dwell_steps_}

    @classmethod
    def from_frames(cls, keys: list[str], shrinkage: float, frames: dict[str, pd.DataFrame]) -> PointInTimeStats:
        stats = cls(keys=keys, shrinkage=shrinkage)
        stats.win_steps_ = frames["win_steps"]
        stats.dwell_steps_ = frames["dwell_steps"]
        stats._index()
        return stats
