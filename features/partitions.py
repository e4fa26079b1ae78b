"""Exports split by opportunity: each partition a complete export folder (`part-00000/`, …)
holding every row of its deals in every table, beside one `oppscore.toml`.

Everything per deal (snapshots, features, labels, scores) is computed per partition by the same
functions as a whole export; what needs every deal (the point-in-time statistics, the
vocabulary, the stage weights) is fitted on a first pass that reads only the small tables
(opportunities and stage history) and the activity types' counts. A whole export is the
one-partition case.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputInvalid
from features.loading import write_export
from features.pit_stats import PointInTimeStats
from features.stages import StageOrder
from features.tables import ACTIVITIES, FIELD_HISTORY, OPPORTUNITIES, STAGE_HISTORY, Tables, empty

PART = "part-"
NOT_KEYS = {"opportunity_id", "loss_reason"}


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


def shared_text(frame: pd.DataFrame, like: pd.DataFrame | None = None) -> pd.DataFrame:
    """The frame with each text value held once per column: a file reader gives every cell its
    own string object (about 50 bytes), and the first pass keeps millions of cells of a few
    thousand values (stage names, segments, each deal's id on every stage row). Values that a
    column of the same name in `like` holds are its objects (a deal's id in the stage history
    is the opportunities' string, not a second copy of every id). Still object
    text, as `Tables` holds it."""
    fixes = {}
    for col, dtype in frame.dtypes.items():
        if dtype == np.dtype(object):
            codes, uniques = pd.factorize(frame[col], use_na_sentinel=True)
            uniques = np.asarray(uniques, dtype=object)
            theirs = pd.unique(like[col].dropna().to_numpy(dtype=object)) if like is not None and col in like.columns else []
            if len(theirs) and len(uniques):
                at = pd.Index(theirs).get_indexer(uniques)
                uniques = np.where(at >= 0, theirs[at], uniques)
            values = np.append(uniques, None)  # code -1 (missing) reads the last: None
            fixes[col] = pd.Series(values[codes], index=frame.index, dtype=object)
    return frame.assign(**fixes) if fixes else frame


@dataclass
class Outline:
    """What the first pass keeps of one partition, or of all of them once combined, as known at
    as_of: the opportunities, the daily increments the point-in-time statistics are made of
    (`PointInTimeStats.increments`: at most a few rows per deal), how often each activity type
    occurs, and — only for the stage weights, which read it whole — the stage history."""

    opportunities: pd.DataFrame
    wins: pd.DataFrame | None  # None once the statistics are fitted and these let go
    dwell: pd.DataFrame | None
    activity_types: pd.Series  # counts by normalised type
    stage_history: pd.DataFrame | None = None
    end: pd.Timestamp | None = None  # the newest row of any table (Tables.end)
    last_activity: pd.Timestamp | None = None
    fingerprints: tuple[str, ...] = ()  # each partition's (Tables.fingerprint), when asked for

    @classmethod
    def of(cls, tables: Tables, stages: StageOrder, as_of: pd.Timestamp, with_history: bool = False, fingerprint: bool = False, statistics: bool = True) -> Outline:
        """`statistics` False: without the increments (None), for what fits no statistic (stage
        weights, forecasts)."""
        known = tables.as_of(as_of, stages)
        opps = known.opportunities
        keys = [c for c in opps.columns if c not in NOT_KEYS and opps[c].dtype == object]  # every column a statistic may be keyed by
        wins, dwell = PointInTimeStats(keys).increments(known, stages) if statistics else (None, None)
        types = known.activities["type"].astype(str).str.strip().str.lower().value_counts()
        last = known.activities["occurred_at"].max() if len(known.activities) else None
        end = known.end if len(known.opportunities) else None
        opps = shared_text(opps)
        history = shared_text(known.stage_history, like=opps) if with_history else None
        return cls(opps, wins, dwell, types, history, end, last, (tables.fingerprint(),) if fingerprint else ())

    @classmethod
    def combine(cls, outlines: list[Outline]) -> Outline:
        """The partitions' outlines as one. Takes them over: each table's pieces are let go as
        soon as they are joined, so at most one table is held twice, never every table beside
        all its pieces."""

        def together(name: str) -> pd.DataFrame | None:
            frames = [getattr(o, name) for o in outlines]
            for o in outlines:
                setattr(o, name, None)
            return None if frames[0] is None else pd.concat(frames, ignore_index=True)

        return cls(
            together("opportunities"),
            together("wins"),
            together("dwell"),
            pd.concat([o.activity_types for o in outlines]).groupby(level=0).sum(),
            together("stage_history"),
            max((o.end for o in outlines if o.end is not None), default=None),
            max((o.last_activity for o in outlines if o.last_activity is not None), default=None),
            tuple(f for o in outlines for f in o.fingerprints),
        )

    def tables(self) -> Tables:
        """The opportunities (and the stage history when kept) as an export without activities."""
        return Tables(self.opportunities, self.stage_history if self.stage_history is not None else empty(STAGE_HISTORY))

    def fingerprint(self) -> str:
        """A digest of the partitions' digests, independent of their order."""
        return hashlib.sha256("".join(sorted(self.fingerprints)).encode()).hexdigest()[:32]

    def statistics(self, keys: list[str]) -> PointInTimeStats:
        return PointInTimeStats(keys).fit_increments(self.wins, self.dwell)
