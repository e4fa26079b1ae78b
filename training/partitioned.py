"""Training on an export read by partition, on either engine (issue 16): the first pass fits
what needs every deal (vocabulary, point-in-time statistics; opportunities and stage history
kept for the labels, stage weights and timing: a few rows per deal); each partition builds its
own snapshots by the same function as a whole export (`training.labelled_snapshots.build`), given the
export's end. On a cluster the model matrix stays on the workers: the backtest reads the rows
of each fold's sample and its evaluation rows, and the served booster is fitted there by
LightGBM's Dask estimator. The bundle is the same format either way."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from engines.partitioned import first_pass, score_points
from engines.runner import Runner, release_memory
from engines.work import read, stages_of
from features.errors import NotEnoughData
from features.frame import FeatureSpec, make_spec, segment_columns
from features.partitions import partitions
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.stages import StageOrder
from scoring.bundle import Bundle
from scoring.models import BoosterModel
from training import fitting as fit
from training import labelled_snapshots as snapshots
from training.labelled_snapshots import Snapshots
from training.targets import Labelled

log = logging.getLogger(__name__)


def snapshot_piece(folder: Path, out: None, settings: Settings, now: pd.Timestamp, stages: StageOrder, spec: FeatureSpec, stats: PointInTimeStats, end: pd.Timestamp,
                   open_now: bool) -> tuple[Snapshots, np.ndarray]:
    """One partition's snapshots, and apart from them their model matrix (which a worker keeps)."""
    tables = read(folder, settings, now).tables
    snaps = snapshots.build(tables, stages, settings, spec, stats, end, open_now=open_now)
    x, snaps.x = snaps.x, None
    return snaps, x


class PartitionedExport:
    """An export in partition folders (`oppscore partition`), read on `run`'s engine."""

    def __init__(self, run: Runner, folder: Path, settings: Settings, now: pd.Timestamp) -> None:
        self.run, self.folder, self.settings, self.now = run, Path(folder), settings, now
        self.stages = stages_of(settings, self.folder, now)  # decided once: an inferred order reads the export
        self.outline = first_pass(run, self.folder, settings, now, now, with_history=True, fingerprint=True, stages=self.stages)
        if self.outline.end is None:
            raise NotEnoughData(f"{folder}: no opportunity in any partition")
        self.tables = self.outline.tables()
        # the tables sort the combined stage history (a copy): the outline's own is let go
        self.outline = replace(self.outline, opportunities=self.tables.opportunities, stage_history=None)
        self.end = self.outline.end
        self._stats: dict[tuple[str, ...], PointInTimeStats] = {}
        run.release_memory()  # the partitions' outlines, combined and freed

    def spec_and_stats(self, stages: StageOrder, settings: Settings) -> tuple[FeatureSpec, PointInTimeStats]:
        """The statistics are fitted once per set of keys, and the daily increments they are made
        of (a few rows of every deal) let go: another set of keys reads the
        first pass again."""
        spec = make_spec(self.tables, stages, segment_columns(settings, self.tables), type_counts=self.outline.activity_types)
        keys = tuple(spec.stat_keys)
        if keys not in self._stats:
            outline = self.outline if self.outline.wins is not None else first_pass(self.run, self.folder, self.settings, self.now, self.now, stages=self.stages)
            self._stats[keys] = outline.statistics(spec.stat_keys)
            self.outline = replace(self.outline, wins=None, dwell=None)
            release_memory()
        return spec, self._stats[keys]

    def snapshots(self, stages: StageOrder, settings: Settings, spec: FeatureSpec, stats: PointInTimeStats, step) -> Snapshots:
        parts = partitions(self.folder)
        shared = {"settings": settings, "now": self.now, "stages": stages, "spec": spec, "stats": stats, "end": self.end}
        light, heavy = self.run.map_held(snapshot_piece, parts, **shared, open_now=False)
        if sum(len(p) for p in light) == 0:
            log.warning(snapshots.NO_GRID_SNAPSHOT)
            light, heavy = self.run.map_held(snapshot_piece, parts, **shared, open_now=True)
        if sum(len(p) for p in light) == 0:
            raise NotEnoughData(snapshots.no_snapshots(settings))
        step("snapshots: gathered")
        sizes = [len(p) for p in light]
        snaps, order = Snapshots.concat(light)  # the whole export's order, so both give the same rows
        del light
        snaps.x = self.run.matrix(heavy, sizes, len(spec.columns), order)
        self.run.release_memory()
        return snaps

    def fingerprint(self) -> str:
        return self.outline.fingerprint()

    def activities(self) -> tuple[int, pd.Timestamp | None]:
        return int(self.outline.activity_types.sum()), self.outline.last_activity

    def fit_booster(self, rows: Labelled, snaps: Snapshots, spec: FeatureSpec, rounds: int | None) -> BoosterModel:
        if isinstance(snaps.x, np.ndarray):
            return fit.fit_booster(rows.rows(snaps.x), spec, rounds).model
        categorical = [spec.columns.index(c) for c in spec.categorical]
        booster = snaps.x.fit_booster(rows.index, rows.y, rows.w, fit.booster_params(len(rows.y)), rounds or fit.DEFAULT_ROUNDS, categorical)
        return BoosterModel(booster)

    def score(self, bundle: Bundle, points: pd.DataFrame) -> pd.DataFrame:
        return score_points(self.run, self.folder, self.settings, self.now, bundle, points, stages=self.stages)
