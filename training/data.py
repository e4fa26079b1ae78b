"""What a training run reads, whole or by partition: the rows every deal needs (opportunities
and stage history: labels, stage weights, timing), the snapshots with their model matrix, and
a way to score points with another model (the promotion gate's comparison). `WholeExport` is
the one-partition case in this process; `training.partitioned.PartitionedExport` the same on
an engine."""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from features.frame import FeatureSpec, make_spec, segment_columns
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.stages import StageOrder
from features.tables import Tables
from scoring.bundle import Bundle
from scoring.models import BoosterModel
from training import fitting as fit
from training import labelled_snapshots as snapshots
from training.labelled_snapshots import Snapshots
from training.targets import Labelled


class TrainingData(Protocol):
    tables: Tables  # opportunities and stage history at least
    end: pd.Timestamp

    def spec_and_stats(self, stages: StageOrder, settings: Settings) -> tuple[FeatureSpec, PointInTimeStats]: ...
    def snapshots(self, stages: StageOrder, settings: Settings, spec: FeatureSpec, stats: PointInTimeStats, step) -> Snapshots: ...
    def fingerprint(self) -> str: ...
    def activities(self) -> tuple[int, pd.Timestamp | None]: ...
    def fit_booster(self, rows: Labelled, snaps: Snapshots, spec: FeatureSpec, rounds: int | None) -> BoosterModel: ...
    def score(self, bundle: Bundle, points: pd.DataFrame) -> pd.DataFrame: ...


class WholeExport:
    """An export held whole in this process."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.end = tables.end

    def spec_and_stats(self, stages: StageOrder, settings: Settings) -> tuple[FeatureSpec, PointInTimeStats]:
        spec = make_spec(self.tables, stages, segment_columns(settings, self.tables))
        return spec, PointInTimeStats(spec.stat_keys).fit(self.tables, stages)

    def snapshots(self, stages: StageOrder, settings: Settings, spec: FeatureSpec, stats: PointInTimeStats, step) -> Snapshots:
        return snapshots.of_export(self.tables, stages, settings, spec, stats, step)

    def fingerprint(self) -> str:
        return self.tables.fingerprint()

    def activities(self) -> tuple[int, pd.Timestamp | None]:
        acts = self.tables.activities
        return len(acts), (acts["occurred_at"].max() if len(acts) else None)

    def fit_booster(self, rows: Labelled, snaps: Snapshots, spec: FeatureSpec, rounds: int | None) -> BoosterModel:
        return fit.fit_booster(rows.rows(snaps.x), spec, rounds).model

    def score(self, bundle: Bundle, points: pd.DataFrame) -> pd.DataFrame:
        from scoring.score import score_points

        return score_points(bundle, self.tables, points, with_factors=False)
