"""The per-partition work and the first pass, as plain functions of a partition folder: what the
local engine calls in a loop and a Dask worker calls for its partitions. A whole export is the
one-partition case: the same functions, the same results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import Validated, load_export
from features.errors import ConfigInvalid
from features.frame import FeatureSpec, build_features, open_points
from features.loading import write_table
from features.partitions import Outline, partitions
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.stages import StageOrder
from features.tables import Tables
from scoring.bundle import Bundle
from scoring.score import account, score_open, score_points

_kept: ContextVar[dict | None] = ContextVar("kept", default=None)


@contextmanager
def read_once() -> Iterator[None]:
    """Within it (the local engine: one process), a partition read again (the first pass, then
    its features or scores) is the reading already done: a whole export is read and checked once
    per command, as it was before it became the one-partition case. One partition is kept, the
    last read. A Dask worker never enters it: it would hold a partition past its task."""
    token = _kept.set({})
    try:
        yield
    finally:
        _kept.reset(token)


def read(folder: Path, settings: Settings, now: pd.Timestamp) -> Validated:
    """The partition loaded and checked by the contract (`features.contract.load_export`)."""
    kept = _kept.get()
    key = (Path(folder).resolve(), now, id(settings))
    if kept is not None and key in kept:
        return kept[key][1]
    validated = load_export(folder, settings, now)
    if kept is not None:
        kept.clear()
        kept[key] = (settings, validated)  # the settings held too: their id is not another's while kept
    return validated


def stages_of(settings: Settings, export: Path | None = None, now: pd.Timestamp | None = None) -> StageOrder:
    """The stage order every partition is read with: the configured one; for a whole `export`
    (read as of `now`) without [stages], the order inferred from it (what a whole export has
    always allowed). Partitions cannot infer it: each could find another order."""
    if settings.stages is not None:
        return StageOrder(settings.stages)
    if export is not None and now is not None and partitions(export) == [Path(export)]:
        return read(export, settings, now).stages
    raise ConfigInvalid("a partitioned export needs [stages] in its oppscore.toml (the order cannot be inferred partition by partition)")


def outline(folder: Path, out: None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, stages: StageOrder, with_history: bool = False, fingerprint: bool = False,
            statistics: bool = True) -> Outline:
    return Outline.of(read(folder, settings, now).tables, stages, as_of, with_history, fingerprint, statistics)


def span(folder: Path, out: None, settings: Settings, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """When the partition's first deal was created and its newest time (`Tables.end`); None
    when it holds no deal."""
    return _span(read(folder, settings, now).tables)


def _span(tables: Tables) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    return (tables.opportunities["created_at"].min(), tables.end) if len(tables.opportunities) else None


def features(folder: Path, out: Path | None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, spec: FeatureSpec, stats: PointInTimeStats) -> pd.DataFrame | int:
    """The feature frame of the partition's deals open at as_of; written to `out` (then only
    its row count comes back: a worker does not ship frames it can write)."""
    tables = read(folder, settings, now).tables
    frame = build_features(tables, open_points(tables, spec.stages, as_of), spec, stats)
    if out is None:
        return frame
    frame.to_parquet(out, index=False)
    return len(frame)


def ids(folder: Path, out: None, settings: Settings, now: pd.Timestamp) -> tuple[np.ndarray, tuple[pd.Timestamp, pd.Timestamp] | None]:
    """The partition's opportunity ids and its span (`span`): what a scoring run reads before it
    scores (the score history's last scores, the default as-of)."""
    tables = read(folder, settings, now).tables
    return tables.opportunities["opportunity_id"].to_numpy(dtype=object), _span(tables)


@dataclass
class ScoredPart:
    """A partition scored: its scores (or, written to a file, their count), where each of its deals
    stands, the stages the model does not know, the counts its drift is judged from
    (`scoring.drift.tally`) and, with a shadow version, that version's scores."""

    scores: pd.DataFrame | int
    counts: dict[str, int]
    unknown_stages: list[str]
    tally: dict
    shadow: pd.DataFrame | None = None


def score(
    folder: Path, out: Path | None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, bundle: Bundle, previous: pd.DataFrame | None = None,
    shadow: Bundle | None = None,
) -> ScoredPart:
    """The partition's open deals scored, and where every one of its deals stands; given the
    score history's `previous` scores, with the change since and every factor's contribution
    (what the history records: written to `out` too, as JSON text). `shadow`: a version that
    scores the same deals beside the champion (without reasons: what the track record reads)."""
    tables = read(folder, settings, now).tables
    tally: dict = {}
    scored = score_open(bundle, tables, as_of, previous=previous, drift_into=tally)
    where = account(bundle, tables, as_of)
    shadowed = score_open(shadow, tables, as_of, with_factors=False) if shadow is not None else None
    if out is None:
        return ScoredPart(scored, where.counts, where.unknown_stages, tally, shadowed)
    write_table(scored.assign(as_of=scored["as_of"].astype(str)), out)
    return ScoredPart(len(scored), where.counts, where.unknown_stages, tally, shadowed)


def scored_points(folder: Path, out: None, settings: Settings, now: pd.Timestamp, bundle: Bundle, points: pd.DataFrame, stages: StageOrder, known_at: pd.Timestamp | None = None) -> pd.DataFrame:
    """`bundle`'s scores of the points whose deals are in this partition, indexed by their row in
    `points`; with `known_at`, from the partition as it stood then (what a forecast as of that
    time reads), else from all of it (point-in-time features either way)."""
    tables = read(folder, settings, now).tables
    if known_at is not None:
        tables = tables.as_of(known_at, stages)
    mine = points[points["opportunity_id"].isin(tables.opportunities["opportunity_id"])]
    return score_points(bundle, tables, mine, with_factors=False).set_index(mine.index)
