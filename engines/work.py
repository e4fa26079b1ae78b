"""The per-partition work and the first pass, as plain functions of a partition folder: what the
local engine calls in a loop and a Dask worker calls for its partitions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract import load_export
from features.errors import ConfigInvalid
from features.frame import FeatureSpec, build_features, open_points
from features.loading import write_table
from features.partitions import Outline
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.stages import StageOrder
from scoring.bundle import Bundle
from scoring.score import account, score_open, score_points


def stages_of(settings: Settings) -> StageOrder:
    """Partitions are read with the configured stage order: inferring it per partition could
    give each partition another order."""
    if settings.stages is None:
        raise ConfigInvalid("a partitioned export needs [stages] in its oppscore.toml (the order cannot be inferred partition by partition)")
    return StageOrder(settings.stages)


def outline(folder: Path, out: None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, with_history: bool = False, fingerprint: bool = False) -> Outline:
    return Outline.of(load_export(folder, settings, now).tables, stages_of(settings), as_of, with_history, fingerprint)


def features(folder: Path, out: Path | None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, spec: FeatureSpec, stats: PointInTimeStats) -> pd.DataFrame | int:
    """The feature frame of the partition's deals open at as_of; written to `out` (then only
    its row count comes back: a worker does not ship frames it can write)."""
    tables = load_export(folder, settings, now).tables
    frame = build_features(tables, open_points(tables, spec.stages, as_of), spec, stats)
    if out is None:
        return frame
    frame.to_parquet(out, index=False)
    return len(frame)


def score(
    folder: Path, out: Path | None, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, bundle: Bundle, previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame | int, dict[str, int], list[str]]:
    """The partition's open deals scored, and where every one of its deals stands; given the
    score history's `previous` scores, with the change since and every factor's contribution
    (what the history records: written to `out` too, as JSON text)."""
    tables = load_export(folder, settings, now).tables
    scored = score_open(bundle, tables, as_of, previous=previous)
    where = account(bundle, tables, as_of)
    if out is None:
        return scored, where.counts, where.unknown_stages
    write_table(scored.assign(as_of=scored["as_of"].astype(str)), out)
    return len(scored), where.counts, where.unknown_stages


def scored_points(folder: Path, out: None, settings: Settings, now: pd.Timestamp, bundle: Bundle, points: pd.DataFrame, known_at: pd.Timestamp | None = None) -> pd.DataFrame:
    """`bundle`'s scores of the points whose deals are in this partition, indexed by their row in
    `points`; with `known_at`, from the partition as it stood then (what a forecast as of that
    time reads), else from all of it (point-in-time features either way)."""
    tables = load_export(folder, settings, now).tables
    if known_at is not None:
        tables = tables.as_of(known_at, stages_of(settings))
    mine = points[points["opportunity_id"].isin(tables.opportunities["opportunity_id"])]
    return score_points(bundle, tables, mine, with_factors=False).set_index(mine.index)
