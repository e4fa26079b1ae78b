"""The canonical export: three tables with fixed column names and dtypes.

Everything downstream (features, labels, analytics, the API) reads these, never a raw file,
so a CRM-specific quirk is handled once, at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from features.asof import NAT, TS_NS as TS_DTYPE, ns as asof_ns
from features.table_index import TableIndex

OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES = "opportunities", "stage_history", "activities"
TABLE_NAMES = (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES)

REQUIRED = {
    OPPORTUNITIES: ["opportunity_id", "created_at", "amount"],
    STAGE_HISTORY: ["opportunity_id", "stage", "entered_at"],
    ACTIVITIES: ["opportunity_id", "occurred_at", "type"],
}
OPTIONAL = {
    OPPORTUNITIES: ["account_id", "owner_id", "team", "expected_close_date", "loss_reason"],
    STAGE_HISTORY: [],
    ACTIVITIES: ["direction", "owner_id", "contact_id"],
}
TIMESTAMPS = {
    OPPORTUNITIES: ["created_at", "expected_close_date"],
    STAGE_HISTORY: ["entered_at"],
    ACTIVITIES: ["occurred_at"],
}
# Columns of the opportunities table that are never model inputs, whatever the config says.
NOT_SEGMENTS = {"opportunity_id", "created_at", "amount", "expected_close_date", "loss_reason"}



def empty(table: str) -> pd.DataFrame:
    cols = REQUIRED[table] + OPTIONAL[table]
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    for c in TIMESTAMPS[table]:
        frame[c] = pd.Series(dtype=TS_DTYPE)
    if table == OPPORTUNITIES:
        frame["amount"] = pd.Series(dtype="float64")
    return frame


_EMPTY_DTYPES = {table: empty(table).dtypes.to_dict() for table in TABLE_NAMES}


def _by_opportunity_then_time(frame: pd.DataFrame, time_col: str) -> pd.DataFrame:
    """The rows sorted by opportunity_id, then time, stably (missing ids and times last); the
    frame itself, re-indexed, when it is sorted already (a request usually is)."""
    ids, _ = pd.factorize(frame["opportunity_id"].to_numpy(dtype=object), sort=True)
    times = asof_ns(frame[time_col])
    order = np.lexsort((np.where(times == NAT, np.iinfo(np.int64).max, times), np.where(ids < 0, len(ids), ids)))
    if bool((order == np.arange(len(order))).all()):
        return frame if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1 else frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def canonical_dtypes(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Timestamps as ns UTC, amounts as floats, everything else as object text, so joins on
    ids always match whatever built the frame (a file, a request, a test)."""
    fixes = {}
    for col, dtype in frame.dtypes.items():  # one read of the dtypes: a column lookup costs more than the check
        if col in TIMESTAMPS[table]:
            if dtype != TS_DTYPE:
                fixes[col] = pd.to_datetime(frame[col], utc=True).astype(TS_DTYPE)
        elif col == "amount":
            if dtype != "float64":
                fixes[col] = frame[col].astype("float64")
        elif dtype != object:
            fixes[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame.assign(**fixes) if fixes else frame


@dataclass(frozen=True)
class Tables:
    """A validated export. History and activities are sorted by opportunity, then time."""

    opportunities: pd.DataFrame
    stage_history: pd.DataFrame
    activities: pd.DataFrame = field(default_factory=lambda: empty(ACTIVITIES))

    def __post_init__(self) -> None:
        for table in TABLE_NAMES:
            frame = getattr(self, table)
            missing = [c for c in REQUIRED[table] + OPTIONAL[table] if c not in frame.columns]
            if missing:
                frame = frame.assign(**{c: pd.Series(None, index=frame.index, dtype=_EMPTY_DTYPES[table][c]) for c in missing})
            frame = canonical_dtypes(frame, table)
            if table != OPPORTUNITIES:
                frame = _by_opportunity_then_time(frame, TIMESTAMPS[table][0])
            object.__setattr__(self, table, frame)

    @cached_property
    def index(self) -> TableIndex:
        """Codes and arrays of these tables, built on first use (tables are never modified)."""
        return TableIndex.build(self.opportunities, self.stage_history, self.activities)

    @property
    def end(self) -> pd.Timestamp:
        """The newest timestamp in the export: what 'now' was when it was taken."""
        stamps = [
            self.opportunities["created_at"].max(),
            self.stage_history["entered_at"].max(),
            self.activities["occurred_at"].max() if len(self.activities) else pd.NaT,
        ]
        return max(s for s in stamps if pd.notna(s))

    def subset(self, opportunity_ids: pd.Index | list[str]) -> Tables:
        ids = pd.Index(opportunity_ids)
        return Tables(
            self.opportunities[self.opportunities["opportunity_id"].isin(ids)].reset_index(drop=True),
            self.stage_history[self.stage_history["opportunity_id"].isin(ids)].reset_index(drop=True),
            self.activities[self.activities["opportunity_id"].isin(ids)].reset_index(drop=True),
        )

    def as_of(self, t: pd.Timestamp) -> Tables:
        """The export as it looked at t: no row after t survives.

        Opportunity attributes are the export's current values (the contract has no history
        of them); the expected close date is dropped because its current value is not what
        the rep expected at t. A loss reason is kept as an attribute: whoever reads it must
        read it only for deals lost as of t (deciding here by looking at later rows would
        itself leak the future).
        """
        t = to_utc(t)
        opps = self.opportunities[self.opportunities["created_at"] <= t].copy()
        hist = self.stage_history[self.stage_history["entered_at"] <= t]
        acts = self.activities[self.activities["occurred_at"] <= t]
        opps["expected_close_date"] = pd.Series(pd.NaT, index=opps.index, dtype=TS_DTYPE)
        return Tables(opps.reset_index(drop=True), hist.reset_index(drop=True), acts.reset_index(drop=True))


def to_utc(t: pd.Timestamp | str | None) -> pd.Timestamp:
    """A timestamp in UTC; naive means UTC (the contract's rule)."""
    ts = pd.Timestamp(t) if t is not None else pd.Timestamp.now(tz="UTC")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("ns")
