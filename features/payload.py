"""Opportunities sent as records (the API's JSON, a pyfunc DataFrame) → canonical tables.

Each record is one opportunity: its own columns plus `stage_history` and `activities` lists.
The caller's schema has typed them (the API's pydantic models); the contract's shared rules
(stage names, times not in the future, unique ids, no stage before creation) run on the
result, with field paths as locations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.contract import Locator, Validated, validate_columns, validate_raw
from features.loading import RawTable
from features.settings import StageConfig
from features.tables import ACTIVITIES, FIELD_HISTORY, OPPORTUNITIES, REQUIRED, STAGE_HISTORY, TIMESTAMPS, Columns, Tables
from features.times import NAT

NESTED = (STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)


def records_to_raw(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, RawTable], dict[str, list[str]]]:
    """Flatten records into the three tables, remembering each row's field path."""
    opps, paths = [], {OPPORTUNITIES: [], STAGE_HISTORY: [], ACTIVITIES: [], FIELD_HISTORY: []}
    nested: dict[str, list[dict]] = {STAGE_HISTORY: [], ACTIVITIES: [], FIELD_HISTORY: []}
    for i, rec in enumerate(records):
        opps.append({k: v for k, v in rec.items() if k not in (*NESTED, "as_of")})
        paths[OPPORTUNITIES].append(f"opportunities[{i}]")
        for table in NESTED:
            for j, row in enumerate(rec.get(table) or []):
                nested[table].append({"opportunity_id": rec.get("opportunity_id"), **row})
                paths[table].append(f"opportunities[{i}].{table}[{j}]")
    raw = {
        OPPORTUNITIES: RawTable(OPPORTUNITIES, pd.DataFrame(opps), None),
        STAGE_HISTORY: RawTable(STAGE_HISTORY, pd.DataFrame(nested[STAGE_HISTORY], columns=["opportunity_id", "stage", "entered_at"]), None),
        ACTIVITIES: RawTable(ACTIVITIES, pd.DataFrame(nested[ACTIVITIES], columns=["opportunity_id", "occurred_at", "type"] if not nested[ACTIVITIES] else None), None),
        FIELD_HISTORY: RawTable(FIELD_HISTORY, pd.DataFrame(nested[FIELD_HISTORY], columns=REQUIRED[FIELD_HISTORY] if not nested[FIELD_HISTORY] else None), None),
    }
    return raw, paths


_EPOCH, _MICROSECOND = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)


def _utc_ns(values: list[datetime | None]) -> np.ndarray:
    """Datetimes (naive = UTC) as int64 ns UTC, by exact integer arithmetic: pandas' parser
    takes twice as long on the time zones pydantic attaches."""
    return np.fromiter(
        (NAT if v is None else ((v if v.tzinfo else v.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND * 1000 for v in values),
        dtype=np.int64, count=len(values),
    )


def _column(table: str, name: str, values: list) -> np.ndarray:
    if name in TIMESTAMPS[table]:
        return _utc_ns(values)
    if name == "amount":
        return np.asarray(values, dtype="float64")
    return np.fromiter(values, dtype=object, count=len(values))  # never a 2-D array, whatever the values


def _typed_columns(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Columns], dict[str, Locator]]:
    """The three tables as arrays in canonical dtypes, built column by column from records a
    schema has typed: a request is scored many times a second, so no frames and no per-cell
    conversions."""
    ids = [rec.get("opportunity_id") for rec in records]
    names = dict.fromkeys(k for rec in records for k in rec if k not in (*NESTED, "as_of"))
    lists = {OPPORTUNITIES: {c: [rec.get(c) for rec in records] for c in names}}
    locators: dict[str, Locator] = {OPPORTUNITIES: lambda i: f"opportunities[{i}]"}
    for table in NESTED:
        owner: list[int] = []
        position: list[int] = []
        rows: list[Mapping[str, Any]] = []
        for i, rec in enumerate(records):
            entries = rec.get(table) or []
            owner.extend([i] * len(entries))
            position.extend(range(len(entries)))
            rows.extend(entries)
        keys = dict.fromkeys([*REQUIRED[table][1:], *sorted(set().union(*rows), key=str)])  # the union in C, not per key in Python
        lists[table] = {"opportunity_id": [ids[i] for i in owner], **{c: [row.get(c) for row in rows] for c in keys}}
        locators[table] = lambda i, o=owner, p=position, t=table: f"opportunities[{o[i]}].{t}[{p[i]}]"
    columns = {table: {c: _column(table, c, values) for c, values in cols.items()} for table, cols in lists.items()}
    return columns, locators


def records_to_tables(
    records: Sequence[Mapping[str, Any]], stages: StageConfig, now: pd.Timestamp, typed: bool = False
) -> Validated:
    """Checked canonical tables; ExportInvalid names each bad field by its path in the request.

    typed: the records were validated by the API's schema (datetimes and numbers, not text),
    so only the shared rules run; otherwise values are coerced and checked like a file's.
    """
    if typed:
        columns, locators = _typed_columns(records)
        return validate_columns(columns, stages, now, locators)
    raw, paths = records_to_raw(records)
    locators = {name: (lambda i, p=paths[name]: p[i] if i < len(p) else f"row {i}") for name in paths}
    return validate_raw(raw, stages, now=now, locators=locators)


def deal_payload(tables: Tables, oid: str, segments: list[str]) -> dict:
    """One deal of an export as POST /v1/score takes it: everything the export holds of it (the
    demo's curl sends one, and answers the score the page shows)."""
    opp = tables.opportunities.set_index("opportunity_id").loc[oid]
    record = {"opportunity_id": oid, "created_at": opp["created_at"].isoformat(), "amount": float(opp["amount"])}
    for col in ("account_id", "owner_id", "team", *segments):
        if col in opp and isinstance(opp[col], str):
            record[col] = opp[col]
    if "expected_close_date" in opp and pd.notna(opp["expected_close_date"]):
        record["expected_close_date"] = pd.Timestamp(opp["expected_close_date"]).isoformat()
    hist = tables.stage_history[tables.stage_history["opportunity_id"] == oid]
    record["stage_history"] = [{"stage": st, "entered_at": t.isoformat()} for st, t in zip(hist["stage"], hist["entered_at"], strict=True)]
    acts = tables.activities[tables.activities["opportunity_id"] == oid]
    record["activities"] = [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items() if k != "opportunity_id" and isinstance(v, (str, pd.Timestamp))}
                            for row in acts.to_dict("records")]
    changes = tables.field_history[tables.field_history["opportunity_id"] == oid]
    record["field_history"] = [{"field": f, "value": v, "changed_at": t.isoformat()} for f, v, t in zip(changes["field"], changes["value"], changes["changed_at"], strict=True)]
    return record
