"""Opportunities sent as records (the API's JSON, a pyfunc DataFrame) → canonical tables.

Each record is one opportunity: its own columns plus `stage_history` and `activities` lists.
The caller's schema has typed them (the API's pydantic models); the contract's shared rules
(stage names, times not in the future, unique ids, no stage before creation) run on the
result, with field paths as locations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from features.contract import Validated, validate_raw
from features.loading import RawTable
from features.settings import StageConfig
from features.tables import ACTIVITIES, OPPORTUNITIES, STAGE_HISTORY, canonical_dtypes

NESTED = (STAGE_HISTORY, ACTIVITIES)


def records_to_raw(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, RawTable], dict[str, list[str]]]:
    """Flatten records into the three tables, remembering each row's field path."""
    opps, paths = [], {OPPORTUNITIES: [], STAGE_HISTORY: [], ACTIVITIES: []}
    nested: dict[str, list[dict]] = {STAGE_HISTORY: [], ACTIVITIES: []}
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
    }
    return raw, paths


def records_to_tables(
    records: Sequence[Mapping[str, Any]], stages: StageConfig, now: pd.Timestamp | None = None, typed: bool = False
) -> Validated:
    """Checked canonical tables; ExportInvalid names each bad field by its path in the request.

    typed: the records were validated by the API's schema (datetimes and numbers, not text),
    so only the shared rules run; otherwise values are coerced and checked like a file's.
    """
    raw, paths = records_to_raw(records)
    if typed:  # the shared rules compare times and ids, so they need the canonical dtypes first
        for table in raw.values():
            table.frame = canonical_dtypes(table.frame, table.name)
    locators = {name: (lambda i, p=paths[name]: p[i] if i < len(p) else f"row {i}") for name in paths}
    return validate_raw(raw, stages, now=now, locators=locators, typed_input=typed)
