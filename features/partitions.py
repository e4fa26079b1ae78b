"""Exports split by opportunity: each partition a complete export folder (`part-00000/`, …)
holding every row of its deals in every table, beside one `oppscore.toml`.

Everything per deal (snapshots, features, labels, scores) is computed per partition by the same
functions as a whole export; what needs every deal (the point-in-time statistics, the
vocabulary, the stage weights) is fitted on a first pass that reads only the small tables
(opportunities and stage history) and the activity types' counts. A whole export is the
one-partition case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputInvalid
from features.loading import write_export
from features.tables import ACTIVITIES, FIELD_HISTORY, OPPORTUNITIES, STAGE_HISTORY, Tables

PART = "part-"


def partitions(folder: Path) -> list[Path]:
    """The partition folders of an export, in order; [folder] for a whole export."""
    parts = sorted(p for p in Path(folder).glob(f"{PART}*") if p.is_dir())
    return parts or [Path(folder)]


def bucket(ids: pd.Series, n: int) -> np.ndarray:
    """The partition of each opportunity id: a stable hash, the same on every machine and run."""
    return (pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy() % np.uint64(n)).astype(np.int64)


def split_export(tables: Tables, out: Path, n: int, fmt: str = "parquet") -> list[Path]:
    """Write `tables` as `n` partitions under `out` (each a complete export of its deals)."""
    if n < 1:
        raise InputInvalid(f"--partitions: found {n}, expected at least 1")
    where = {name: bucket(getattr(tables, name)["opportunity_id"], n) for name in (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)}
    folders = []
    for k in range(n):
        part = Tables(*(getattr(tables, name)[where[name] == k] for name in (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)))
        folder = out / f"{PART}{k:05d}"
        write_export(part, folder, fmt=fmt)
        folders.append(folder)
    return folders


@dataclass
class Outline:
    """What the first pass keeps of one partition, or of all of them once combined: the small
    tables and how often each activity type occurs."""

    opportunities: pd.DataFrame
    stage_history: pd.DataFrame
    activity_types: pd.Series  # counts by normalised type

    @classmethod
    def of(cls, tables: Tables, as_of: pd.Timestamp) -> Outline:
        """The activity types counted as known at as_of (the vocabulary is learned from then)."""
        acts = tables.activities
        known = acts[acts["occurred_at"] <= as_of]
        types = known["type"].astype(str).str.strip().str.lower().value_counts()
        return cls(tables.opportunities, tables.stage_history, types)

    @classmethod
    def combine(cls, outlines: list[Outline]) -> Outline:
        types = pd.concat([o.activity_types for o in outlines]).groupby(level=0).sum()
        return cls(
            pd.concat([o.opportunities for o in outlines], ignore_index=True),
            pd.concat([o.stage_history for o in outlines], ignore_index=True),
            types,
        )

    def tables(self) -> Tables:
        """The small tables as an export without activities (enough for the statistics and the
        stage weights, which read no activity)."""
        return Tables(self.opportunities, self.stage_history)
