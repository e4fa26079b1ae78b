"""The tables as integer codes and arrays, built once per `Tables` and read by every feature.

Features are computed for two very different callers: training (millions of snapshots) and
the API (one opportunity, many times a second). pandas costs tens of microseconds of fixed
overhead per operation, which the API would pay hundreds of times per request; numpy on
arrays prepared once costs microseconds. Everything here depends on the tables alone (not on
the stage order or the model), so it is cached on the `Tables` object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.asof import Codebook, SortedRows, factorize, take_array


def _normalised_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes of case- and space-folded text; missing values get -1. Folding is done on the
    distinct values only, not on every row."""
    codes, uniques = factorize(values)
    if len(uniques) == 0:
        return codes, []
    refold, names = factorize([str(u).strip().lower() for u in uniques])
    return np.where(codes >= 0, refold[codes], -1), list(names)


def group_starts(codes: np.ndarray) -> np.ndarray:
    """For rows sorted so that each opportunity's rows are contiguous: the index of the first
    row of each row's opportunity."""
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    return np.flatnonzero(first)[np.cumsum(first) - 1]


def group_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running sum within each opportunity's contiguous rows."""
    total = np.cumsum(values)
    return total - total[starts] + values[starts] if len(values) else total


@dataclass(frozen=True)
class FieldSteps:
    """One tracked field's changes (field history), indexed for as-of lookups: the value after
    each change, the first value, and for dates the running count and days of pushes later."""

    rows: SortedRows
    value: np.ndarray  # float: an amount, or a date in ns
    first: np.ndarray  # the opportunity's first recorded value, per row
    pushes: np.ndarray  # running count of changes to a later value
    pushed_days: np.ndarray  # running sum of the days those changes added

    @classmethod
    def of(cls, fields: dict[str, np.ndarray] | None, field: str, ids: Codebook) -> FieldSteps:
        if fields is None or len(fields["opportunity_id"]) == 0:
            empty = np.zeros(0)
            return cls(SortedRows(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)), empty, empty, empty, empty)
        mine = np.asarray(fields["field"] == field, dtype=bool)
        code = ids.codes(fields["opportunity_id"][mine])
        known = code >= 0
        code, time = code[known], fields["changed_at"][mine][known]
        text = pd.Series(fields["value"][mine][known], dtype=object)
        if field == "expected_close_date":
            value = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601").dt.as_unit("ns").array.asi8.astype("float64")
            value[value == np.iinfo(np.int64).min] = np.nan
        else:
            value = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
        starts = group_starts(code) if len(code) else np.zeros(0, dtype=np.int64)
        prev = np.concatenate([[np.nan], value[:-1]]) if len(value) else value
        prev[np.arange(len(value)) == starts] = np.nan
        later = np.nan_to_num(value - prev, nan=0.0)
        pushed = later > 0
        return cls(
            SortedRows(code, time), value, value[starts] if len(value) else value,
            group_cumsum(pushed.astype(np.int64), starts).astype("float64"),
            group_cumsum(np.where(pushed, later / 86_400e9, 0.0), starts),
        )


@dataclass(frozen=True)
class TableIndex:
    ids: Codebook  # opportunity_id ↔ code
    opp_row: np.ndarray  # code → its (first) row in opportunities, -1 if none
    opp_created: np.ndarray  # created_at per opportunities row, ns
    hist_time: np.ndarray
    hist_start: np.ndarray  # first row of the row's opportunity
    hist_stage_code: np.ndarray  # code into hist_stages
    hist_stages: np.ndarray  # distinct stage names (text)
    hist_rows: SortedRows
    act_time: np.ndarray
    act_start: np.ndarray
    act_kind: np.ndarray  # code into act_kinds, -1 missing
    act_kinds: list[str]  # distinct activity types, case- and space-folded
    act_inbound: np.ndarray  # bool
    act_new_contact: np.ndarray  # bool: the first row naming this contact on this opportunity
    act_rows: SortedRows
    opp_columns: dict[str, np.ndarray]  # the opportunities table's arrays
    close: FieldSteps  # expected close date changes
    amount: FieldSteps  # amount changes

    @classmethod
    def build(
        cls, opportunities: dict[str, np.ndarray], stage_history: dict[str, np.ndarray], activities: dict[str, np.ndarray], field_history: dict[str, np.ndarray] | None = None
    ) -> TableIndex:
        """From the tables' arrays (`features.tables.Columns`: times in ns); history, activities
        and field history sorted by opportunity, then time (Tables sorts them)."""
        n_o, n_h = len(opportunities["opportunity_id"]), len(stage_history["opportunity_id"])
        every_id = np.concatenate([table["opportunity_id"] for table in (opportunities, stage_history, activities)])
        ids = Codebook(every_id)
        codes = ids.codes_of_rows
        opp_code, hist_code, act_code = codes[:n_o], codes[n_o : n_o + n_h], codes[n_o + n_h :]
        opp_row = np.full(len(ids), -1, dtype=np.int64)
        rows = np.arange(n_o)
        opp_row[opp_code[::-1]] = rows[::-1]  # reversed, so the first row of a duplicated id wins

        hist_time = stage_history["entered_at"]
        stage_code, stages = factorize(stage_history["stage"])
        act_time = activities["occurred_at"]
        kind, kinds = _normalised_codes(activities["type"])
        direction, directions = _normalised_codes(activities["direction"])
        inbound_code = directions.index("inbound") if "inbound" in directions else -2
        contact, _ = factorize(activities["contact_id"])
        new_contact = np.zeros(len(act_time), dtype=bool)
        if len(act_time):
            pair = act_code.astype(np.int64) * (int(contact.max()) + 2) + (contact + 1)
            _, first = np.unique(pair, return_index=True)
            new_contact[first] = True
            new_contact &= contact >= 0
        return cls(
            ids=ids,
            opp_row=opp_row,
            opp_created=opportunities["created_at"],
            hist_time=hist_time,
            hist_start=group_starts(hist_code),
            hist_stage_code=stage_code,
            hist_stages=np.asarray([str(s) for s in stages], dtype=object),
            hist_rows=SortedRows(hist_code, hist_time),
            act_time=act_time,
            act_start=group_starts(act_code),
            act_kind=kind,
            act_kinds=kinds,
            act_inbound=direction == inbound_code,
            act_new_contact=new_contact,
            act_rows=SortedRows(act_code, act_time),
            opp_columns=opportunities,
            close=FieldSteps.of(field_history, "expected_close_date", ids),
            amount=FieldSteps.of(field_history, "amount", ids),
        )

    def codes(self, opportunity_ids: np.ndarray) -> np.ndarray:
        """Codes of the given ids; -1 for ids the tables do not hold."""
        return self.ids.codes(opportunity_ids)

    def opportunity_rows(self, codes: np.ndarray) -> np.ndarray:
        """The opportunities-table row of each code, -1 where the table has none."""
        if len(self.opp_row) == 0:
            return np.full(len(codes), -1, dtype=np.int64)
        return np.where(codes >= 0, self.opp_row[np.maximum(codes, 0)], -1)

    def opportunity_values(self, column: str, codes: np.ndarray) -> np.ndarray:
        """A column of the opportunities table for each code (None, or NaN for numbers, where
        the opportunity is not in the table; None everywhere for a column the table lacks)."""
        values = self.opp_columns.get(column)
        if values is None:
            return np.full(len(codes), None, dtype=object)
        return take_array(values, self.opportunity_rows(codes))
