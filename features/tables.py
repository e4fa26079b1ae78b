"""The canonical export: three tables (and an optional fourth, field history) with fixed column
names and dtypes.

Everything downstream (features, labels, analytics, the API) reads these, never a raw file,
so a CRM-specific quirk is handled once, at the boundary.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import pandas as pd

from features.asof import factorize
from features.stages import StageOrder
from features.stays import final_states
from features.table_index import TableIndex
from features.times import NAT, from_ns, to_utc
from features.times import TS_NS as TS_DTYPE
from features.times import ns as asof_ns

OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY = "opportunities", "stage_history", "activities", "field_history"
TABLE_NAMES = (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)
OPTIONAL_TABLES = (ACTIVITIES, FIELD_HISTORY)
TRACKED_FIELDS = ("amount", "expected_close_date", "probability", "forecast_category")

REQUIRED = {
    OPPORTUNITIES: ["opportunity_id", "created_at", "amount"],
    STAGE_HISTORY: ["opportunity_id", "stage", "entered_at"],
    ACTIVITIES: ["opportunity_id", "occurred_at", "type"],
    FIELD_HISTORY: ["opportunity_id", "field", "value", "changed_at"],
}
OPTIONAL = {
    OPPORTUNITIES: ["account_id", "owner_id", "team", "expected_close_date", "loss_reason"],
    STAGE_HISTORY: [],
    ACTIVITIES: ["direction", "owner_id", "contact_id"],
    FIELD_HISTORY: [],
}
TIMESTAMPS = {
    OPPORTUNITIES: ["created_at", "expected_close_date"],
    STAGE_HISTORY: ["entered_at"],
    ACTIVITIES: ["occurred_at"],
    FIELD_HISTORY: ["changed_at"],
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

Columns = dict[str, np.ndarray]
"""One table as arrays: text as object (None missing), times as int64 ns UTC (NAT missing),
amount as float64. What features, the contract's rules and the index read."""


def _sort_order(ids: np.ndarray, times: np.ndarray) -> np.ndarray | None:
    """The stable order by opportunity_id, then time (missing ids and times last); None when
    the rows are in that order already (a request usually is)."""
    codes, _ = factorize(ids, sort=True)
    order = np.lexsort((np.where(times == NAT, np.iinfo(np.int64).max, times), np.where(codes < 0, len(codes), codes)))
    return None if bool((order == np.arange(len(order))).all()) else order


def _by_opportunity_then_time(frame: pd.DataFrame, time_col: str) -> pd.DataFrame:
    order = _sort_order(frame["opportunity_id"].to_numpy(dtype=object), asof_ns(frame[time_col]))
    if order is None:
        return frame if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1 else frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def _canonical_dtypes(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Timestamps as ns UTC, amounts as floats, everything else as object text, so joins on
    ids always match whatever built the frame (a file, an adapter, a test)."""
    fixes = {}
    for col, dtype in frame.dtypes.items():  # one read of the dtypes: a column lookup costs more than the check
        if col in TIMESTAMPS[table]:
            if dtype != TS_DTYPE:
                fixes[col] = pd.to_datetime(frame[col], utc=True).astype(TS_DTYPE)
        elif col == "amount":
            if dtype != "float64":
                fixes[col] = frame[col].astype("float64")
        elif dtype != np.dtype(object):
            fixes[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame.assign(**fixes) if fixes else frame


def columns_of(frame: pd.DataFrame, table: str) -> Columns:
    """The arrays beneath a frame in canonical dtypes (views, not copies)."""
    return {
        col: asof_ns(frame[col]) if col in TIMESTAMPS[table] else frame[col].to_numpy(dtype="float64" if col == "amount" else object)
        for col in frame.columns
    }


def _frame_of(columns: Columns, table: str) -> pd.DataFrame:
    data = {
        col: from_ns(values) if col in TIMESTAMPS[table]
        else pd.Series(values, dtype="float64" if col == "amount" else object, copy=False)
        for col, values in columns.items()
    }
    return pd.DataFrame(data, index=pd.RangeIndex(len(columns["opportunity_id"])), copy=False)


def _missing_column(table: str, col: str, n: int) -> np.ndarray:
    if col in TIMESTAMPS[table]:
        return np.full(n, NAT, dtype=np.int64)
    return np.full(n, np.nan) if col == "amount" else np.full(n, None, dtype=object)


class Tables:
    """A validated export. History and activities are sorted by opportunity, then time.

    Held as frames (what analytics, labels and training read) and as arrays (what features
    read), each built from the other on first use: a batch arrives as frames, an API request as
    arrays, and a one-opportunity request would otherwise spend half its time building frames
    nobody reads. Never modified once built.
    """

    def __init__(
        self, opportunities: pd.DataFrame, stage_history: pd.DataFrame, activities: pd.DataFrame | None = None, field_history: pd.DataFrame | None = None
    ) -> None:
        self._columns: dict[str, Columns] = {}
        self._frames: dict[str, pd.DataFrame] = {}
        given = (
            opportunities, stage_history,
            activities if activities is not None else empty(ACTIVITIES),
            field_history if field_history is not None else empty(FIELD_HISTORY),
        )
        for table, frame in zip(TABLE_NAMES, given, strict=True):
            missing = [c for c in REQUIRED[table] + OPTIONAL[table] if c not in frame.columns]
            if missing:
                frame = frame.assign(**{c: pd.Series(None, index=frame.index, dtype=_EMPTY_DTYPES[table][c]) for c in missing})
            frame = _canonical_dtypes(frame, table)
            if table != OPPORTUNITIES:
                frame = _by_opportunity_then_time(frame, TIMESTAMPS[table][0])
            self._frames[table] = frame

    @classmethod
    def of_columns(cls, opportunities: Columns, stage_history: Columns, activities: Columns, field_history: Columns | None = None) -> Tables:
        """Tables from arrays already in canonical dtypes (see `Columns`), all of a table's
        arrays the same length; missing contract columns are added, rows sorted as `Tables` are."""
        tables = cls.__new__(cls)
        tables._frames = {}
        tables._columns = {}
        if field_history is None:
            field_history = columns_of(empty(FIELD_HISTORY), FIELD_HISTORY)
        for table, columns in zip(TABLE_NAMES, (opportunities, stage_history, activities, field_history), strict=True):
            n = len(columns["opportunity_id"])
            columns = dict(columns)
            for col in REQUIRED[table] + OPTIONAL[table]:
                if col not in columns:
                    columns[col] = _missing_column(table, col, n)
            if table != OPPORTUNITIES:
                order = _sort_order(columns["opportunity_id"], columns[TIMESTAMPS[table][0]])
                if order is not None:
                    columns = {col: values[order] for col, values in columns.items()}
            tables._columns[table] = columns
        return tables

    def fingerprint(self) -> str:
        """A digest of every row of every table, order-independent within a table: two runs on
        the same export agree, one changed value anywhere disagrees."""
        digest = hashlib.sha256()
        for table in TABLE_NAMES:
            frame = self.frame(table)
            rows = pd.util.hash_pandas_object(frame[sorted(frame.columns)], index=False).to_numpy()
            digest.update(f"{table}:{len(rows)}:".encode() + np.sort(rows).tobytes())
        return digest.hexdigest()[:32]

    def frame(self, table: str) -> pd.DataFrame:
        if table not in self._frames:
            self._frames[table] = _frame_of(self._columns[table], table)
        return self._frames[table]

    def columns(self, table: str) -> Columns:
        if table not in self._columns:
            self._columns[table] = columns_of(self._frames[table], table)
        return self._columns[table]

    @property
    def opportunities(self) -> pd.DataFrame:
        return self.frame(OPPORTUNITIES)

    @property
    def stage_history(self) -> pd.DataFrame:
        return self.frame(STAGE_HISTORY)

    @property
    def activities(self) -> pd.DataFrame:
        return self.frame(ACTIVITIES)

    @property
    def field_history(self) -> pd.DataFrame:
        return self.frame(FIELD_HISTORY)

    @cached_property
    def index(self) -> TableIndex:
        """Codes and arrays of these tables, built on first use."""
        return TableIndex.build(*(self.columns(table) for table in (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES)), self.columns(FIELD_HISTORY))

    @property
    def end(self) -> pd.Timestamp:
        """The newest timestamp in the export: what 'now' was when it was taken."""
        stamps = [
            self.opportunities["created_at"].max(),
            self.stage_history["entered_at"].max(),
            self.activities["occurred_at"].max() if len(self.activities) else pd.NaT,
            self.field_history["changed_at"].max() if len(self.field_history) else pd.NaT,
        ]
        return max(s for s in stamps if pd.notna(s))

    def subset(self, opportunity_ids: pd.Index | list[str]) -> Tables:
        ids = pd.Index(opportunity_ids)
        return Tables(
            self.opportunities[self.opportunities["opportunity_id"].isin(ids)].reset_index(drop=True),
            self.stage_history[self.stage_history["opportunity_id"].isin(ids)].reset_index(drop=True),
            self.activities[self.activities["opportunity_id"].isin(ids)].reset_index(drop=True),
            self.field_history[self.field_history["opportunity_id"].isin(ids)].reset_index(drop=True),
        )

    @cached_property
    def _opportunity_row(self) -> dict[str, int]:
        return {oid: i for i, oid in enumerate(self.columns(OPPORTUNITIES)["opportunity_id"].tolist())}

    def of_one(self, opportunity_id: str) -> Tables:
        """One opportunity's rows, found by bisection in the tables' sort order (opportunity,
        then time): a lookup among a hundred thousand deals, where `subset` scans every row."""
        row = self._opportunity_row.get(opportunity_id)
        opps = self.opportunities.iloc[[row]] if row is not None else self.opportunities.iloc[:0]
        parts = []
        for table in (STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY):
            ids = self.columns(table)["opportunity_id"]
            start, stop = np.searchsorted(ids, opportunity_id, "left"), np.searchsorted(ids, opportunity_id, "right")
            parts.append(self.frame(table).iloc[start:stop].reset_index(drop=True))
        return Tables(opps.reset_index(drop=True), *parts)

    def of_many(self, opportunity_ids: list[str], records_only: bool = False) -> Tables:
        """Some opportunities' rows, found by bisection as `of_one` finds one (the events of a
        batch are checked against their deals' rows at once); `records_only`: their
        opportunities rows, the other tables empty."""
        wanted = np.asarray(sorted({str(i) for i in opportunity_ids}), dtype=object)
        rows = [self._opportunity_row[i] for i in wanted if i in self._opportunity_row]
        parts = []
        for table in (STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY):
            if records_only:
                parts.append(self.frame(table).iloc[:0])
                continue
            ids = self.columns(table)["opportunity_id"]
            starts, stops = np.searchsorted(ids, wanted, "left"), np.searchsorted(ids, wanted, "right")
            lengths = stops - starts
            take = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())  # every row of each range, in one go
            parts.append(self.frame(table).iloc[take].reset_index(drop=True))
        return Tables(self.opportunities.iloc[rows].reset_index(drop=True), *parts)

    def as_of(self, t: pd.Timestamp, stages: StageOrder) -> Tables:
        """The export as it looked at t: no row after t survives.

        Opportunity attributes are the export's current values (the contract keeps no history
        of them), with two exceptions known to change with the outcome: the expected close date
        is dropped (its current value is not what the rep expected at t; the field history keeps
        what was known then) and the loss reason is blanked unless the deal's last stage at t is
        the lost stage.
        """
        t = to_utc(t)
        opps = self.opportunities[self.opportunities["created_at"] <= t].copy()
        hist = self.stage_history[self.stage_history["entered_at"] <= t]
        acts = self.activities[self.activities["occurred_at"] <= t]
        fields = self.field_history[self.field_history["changed_at"] <= t]
        opps["expected_close_date"] = pd.Series(pd.NaT, index=opps.index, dtype=TS_DTYPE)
        lost_now = opps["opportunity_id"].map(final_states(hist, stages)["state"]).eq("lost")
        opps["loss_reason"] = opps["loss_reason"].where(lost_now, None)
        return Tables(opps.reset_index(drop=True), hist.reset_index(drop=True), acts.reset_index(drop=True), fields.reset_index(drop=True))
