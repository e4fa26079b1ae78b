"""Training snapshots with their features and labels, for a whole export or one partition of
it: the same function either way, given the export's end (a partition's own newest row is not
the export's)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from features.errors import NotEnoughData
from features.frame import FeatureSpec, build_features, model_matrix, open_points
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.snapshots import snapshot_points
from features.stages import StageOrder
from features.tables import Tables
from features.times import DAY_NS, from_ns, ns
from training.labels import stalled_label
from training.targets import Labelled, narrow

log = logging.getLogger(__name__)


@dataclass
class Snapshots:
    """Every training snapshot of the export, what the slices need of its features, its model
    matrix and what is known of its outcome. In (opportunity_id, as_of) order, whatever the
    partitioning, so a partitioned export gives the same rows as a whole one. A snapshot's deal
    is a code into `ids` (the frame's categories, sorted): labels are looked up per deal and
    deals counted and sampled by integer, not by millions of strings."""

    frame: pd.DataFrame  # opportunity_id, the stage and the segment columns (text ones categorical)
    x: Any  # the model matrix (float32): an array, or one held by partition on a cluster (indexed the same way)
    grid: np.ndarray  # the distinct snapshot times, ns ascending
    slot: np.ndarray  # each row's time, as its place in `grid` (int32)
    stalled: np.ndarray  # 1/0; NaN where the horizon passes the export's end (float32)
    horizon_ns: int

    @classmethod
    def at_times(cls, frame: pd.DataFrame, x: Any, time: np.ndarray, stalled: np.ndarray, horizon_ns: int) -> Snapshots:
        """Snapshots taken at `time` (ns, one per row). Snapshots fall on a grid of dates, so a
        row's time is held as its date's place on the grid: what depends on a row only through
        its time (the censoring weights, the rows up to or at a fold date) is computed per date
        and read by row, and every row holds 4 bytes, not 8."""
        codes, grid = pd.factorize(time, sort=True)
        return cls(frame, x, np.asarray(grid, dtype=np.int64), codes.astype(np.int32), stalled, horizon_ns)

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def time(self) -> np.ndarray:
        """Every row's time (ns), made on demand (8 bytes a snapshot): what reads every row
        asks `until` or `on`, what reads a few `times`."""
        return self.grid[self.slot]

    def times(self, rows: np.ndarray) -> np.ndarray:
        return self.grid[self.slot[rows]]

    def until(self, t_ns: int) -> np.ndarray:
        """Which rows were taken at or before `t_ns`."""
        return self.slot < np.searchsorted(self.grid, t_ns, side="right")

    def on(self, t: pd.Timestamp) -> np.ndarray:
        """Which rows were taken at `t`."""
        return self.at_time(slice(None), t)

    @cached_property
    def deal(self) -> np.ndarray:
        return self.frame["opportunity_id"].cat.codes.to_numpy()

    @cached_property
    def ids(self) -> np.ndarray:
        return self.frame["opportunity_id"].cat.categories.to_numpy(dtype=object)

    def share_ids(self, known: pd.Series) -> None:
        """Hold `ids` as the objects of `known` (the opportunities' ids, each once), not as new
        strings made from the categories, a second copy of every id the opportunities table
        already holds. Left as they are when a deal is not among them."""
        known = pd.Index(known.to_numpy(dtype=object), dtype=object)  # not inferred as str: its values would be new strings
        at = known.get_indexer(self.frame["opportunity_id"].cat.categories)
        if len(at) and (at >= 0).all():
            self.__dict__["ids"] = known.to_numpy()[at]  # what the cached property returns from now on

    def at_time(self, rows: np.ndarray | slice, t: pd.Timestamp) -> np.ndarray:
        """Which of `rows` are snapshots taken at `t`."""
        k = int(np.searchsorted(self.grid, t.value))
        if k == len(self.grid) or self.grid[k] != t.value:
            return np.zeros(len(self.slot[rows]), dtype=bool)
        return self.slot[rows] == k

    @cached_property
    def hashes(self) -> np.ndarray:
        """A stable hash of each deal's id (what samples whole deals the same on every engine).
        Hashed as they are (the same values as hashing them as `str`), neither copied into
        another string column nor factorized: the ids are distinct, and either would be a
        copy of every id."""
        return pd.util.hash_pandas_object(pd.Series(self.ids, dtype=object), index=False, categorize=False).to_numpy()

    def points(self, rows: np.ndarray) -> pd.DataFrame:
        """The (opportunity_id, as_of) of the given rows."""
        return pd.DataFrame({"opportunity_id": self.ids[self.deal[rows]], "as_of": from_ns(self.times(rows))})

    def labelled(self, rows: np.ndarray, y: np.ndarray, w: np.ndarray) -> Labelled:
        return Labelled(rows, y, w, self.deal[rows], self.ids, self.hashes)

    @classmethod
    def concat(cls, pieces: list[Snapshots]) -> tuple[Snapshots, np.ndarray]:
        """Partitions' snapshots as one, in the whole export's (opportunity_id, as_of) order, and
        that order: for each row, its row among the pieces laid end to end (by which the caller
        lays out the model matrices, kept apart). Laid out a column at a time, the pieces emptied
        as they are read, so the pieces, their concatenation and its ordered copy are never all
        alive at once."""
        names = list(pieces[0].frame.columns)
        frames = {c: [p.frame[c] for p in pieces] for c in names}
        stalled = [p.stalled for p in pieces]
        grid = np.unique(np.concatenate([p.grid for p in pieces]))
        slot = np.concatenate([np.searchsorted(grid, p.grid).astype(np.int32)[p.slot] for p in pieces])  # each piece's dates on the joint grid
        horizon_ns = pieces[0].horizon_ns
        for p in pieces:
            p.frame = p.slot = p.stalled = None
        deal = _concatenated(frames.pop("opportunity_id"))
        order = narrow(np.lexsort((slot, deal.cat.codes.to_numpy())), len(slot))  # by deal, then time; the matrix keeps it
        columns = {"opportunity_id": deal.iloc[order].reset_index(drop=True)}
        del deal
        for c in list(frames):
            column = _concatenated(frames.pop(c))
            columns[c] = column.iloc[order].reset_index(drop=True)
            del column
        return cls(frame=pd.DataFrame({c: columns[c] for c in names}), x=None, grid=grid, slot=slot[order], stalled=np.concatenate(stalled)[order], horizon_ns=horizon_ns), order


def _concatenated(parts: list[pd.Series]) -> pd.Series:
    """One column of the partitions' snapshots: categorical ones keep their codes (their
    vocabularies joined, sorted), where pd.concat would turn them into text."""
    if all(isinstance(part.dtype, pd.CategoricalDtype) for part in parts):
        return pd.Series(union_categoricals(parts, sort_categories=True))
    return pd.concat(parts, ignore_index=True)


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
