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
from features.tables import TS_DTYPE, Tables

GLOBAL = "__all__"
MISSING = "(missing)"
DAY_NS = 86_400 * 10**9


def _key_values(series: pd.Series) -> pd.Series:
    return series.astype("object").where(series.notna(), MISSING).astype(str)


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
        self.fitted_until_ = tables.end
        return self

    # -- lookups -------------------------------------------------------------------------
    def _asof(self, steps: pd.DataFrame, by: str, query: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
        q = query.assign(_row=np.arange(len(query)), as_of=pd.to_datetime(query["as_of"], utc=True).astype(TS_DTYPE))
        q = q.sort_values("as_of", kind="stable")
        s = steps.sort_values("time", kind="stable")
        q[by] = q[by].astype(str)
        s = s.assign(**{by: s[by].astype(str)})
        merged = pd.merge_asof(q, s[[by, "time", *cols]], left_on="as_of", right_on="time", by=by, direction="backward")
        return merged.sort_values("_row")[cols].reset_index(drop=True).fillna(0)

    def global_rate(self, as_of: pd.Series) -> np.ndarray:
        steps = self.win_steps_[self.win_steps_["key"] == GLOBAL].drop(columns="key")
        got = self._asof(steps, "value", pd.DataFrame({"value": GLOBAL, "as_of": as_of.reset_index(drop=True)}), ["won", "closed"])
        return ((got["won"] + 1.0) / (got["closed"] + 2.0)).to_numpy()  # Beta(1, 1): an honest 0.5 before any close

    def win_rate(self, key: str, values: pd.Series, as_of: pd.Series, prior: np.ndarray | None = None) -> np.ndarray:
        """The key value's win rate among deals closed by as_of, shrunk toward the global rate."""
        prior = self.global_rate(as_of) if prior is None else prior
        steps = self.win_steps_[self.win_steps_["key"] == key].drop(columns="key")
        query = pd.DataFrame({"value": _key_values(values).to_numpy(), "as_of": as_of.reset_index(drop=True)})
        got = self._asof(steps, "value", query, ["won", "closed"])
        return ((got["won"] + self.shrinkage * prior) / (got["closed"] + self.shrinkage)).to_numpy()

    def typical_dwell(self, stage: pd.Series, as_of: pd.Series) -> np.ndarray:
        """Geometric-mean days that completed stays in this stage took, among those completed by as_of."""
        query = pd.DataFrame({"stage": stage.astype(str).to_numpy(), "as_of": as_of.reset_index(drop=True)})
        got = self._asof(self.dwell_steps_, "stage", query, ["n", "sum_log"])
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
        stats.fitted_until_ = max(frames["win_steps"]["time"].max(), frames["dwell_steps"]["time"].max())
        return stats
