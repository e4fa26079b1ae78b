"""Training snapshots with their features and labels, for a whole export or one partition of
it: the same function either way, given the export's end (a partition's own newest row is not
the export's)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.errors import NotEnoughData
from features.frame import FeatureSpec, build_features, model_matrix, open_points
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.snapshots import snapshot_points
from features.stages import StageOrder
from features.tables import Tables
from features.times import DAY_NS, ns
from training.backtest import Snapshots
from training.labels import stalled_label

log = logging.getLogger(__name__)


def build(
    tables: Tables,
    stages: StageOrder,
    settings: Settings,
    spec: FeatureSpec,
    stats: PointInTimeStats,
    end: pd.Timestamp,
    step=None,
    open_now: bool = False,
) -> Snapshots:
    """Every weekly grid time each deal was open, up to `end`; with `open_now`, the deals open at
    `end` instead (what the rates start from when no deal was open at any grid time)."""
    step = step or (lambda _m: None)
    points = open_points(tables, stages, end) if open_now else snapshot_points(tables, stages, every_days=settings.snapshots.every_days, until=end)
    points = points.sort_values(["opportunity_id", "as_of"], kind="stable").reset_index(drop=True)
    frame = build_features(tables, points, spec, stats, progress=step)
    step("labels")
    horizon = settings.stall.horizon_days
    # float32: LightGBM bins the values anyway, and the matrix is most of a training run's memory
    x = model_matrix({c: frame[c].to_numpy(dtype=object if c in spec.categorical else "float64") for c in spec.columns}, spec).astype(np.float32)
    kept = frame[["opportunity_id", "stage", *spec.segment_columns]].astype({c: "category" for c in ["opportunity_id", "stage", *spec.segment_columns]})
    return Snapshots.at_times(
        frame=kept,
        x=x,
        time=ns(points["as_of"]),
        stalled=stalled_label(tables, stages, points, horizon, end).astype(np.float32),  # 1/0/NaN
        horizon_ns=horizon * DAY_NS,
    )


def of_export(tables: Tables, stages: StageOrder, settings: Settings, spec: FeatureSpec, stats: PointInTimeStats, step=None) -> Snapshots:
    """A whole export's snapshots; when no deal was open at any grid time, its open deals."""
    snaps = build(tables, stages, settings, spec, stats, tables.end, step)
    if len(snaps) == 0:
        snaps = build(tables, stages, settings, spec, stats, tables.end, step, open_now=True)
        log.warning(NO_GRID_SNAPSHOT)
    if len(snaps) == 0:
        raise NotEnoughData(no_snapshots(settings))
    return snaps


NO_GRID_SNAPSHOT = "no deal was open at any weekly snapshot time: no labelled snapshot; the rates start from the stage weights and stay there"


def no_snapshots(settings: Settings) -> str:
    return f"no training snapshots and no open deal: no deal was open at any of the weekly grid times (every {settings.snapshots.every_days} days) or at the data's end"
