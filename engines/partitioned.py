"""Features, scores and stage weights of a partitioned export (or a whole one: one partition),
on whichever engine the runner is: the first pass fits what needs every deal (from a few rows
per deal: the daily increments of its statistics), then each partition is computed alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.forecast import win_horizon_days
from analytics.stage_weights import StageWeights
from engines import work
from engines.runner import Runner
from features.frame import FeatureSpec, make_spec, segment_columns
from features.partitions import Outline, partitions
from features.settings import Settings
from features.stages import StageOrder
from scoring import drift
from scoring.bundle import Bundle


def first_pass(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, with_history: bool = False, fingerprint: bool = False,
               statistics: bool = True, stages: StageOrder | None = None) -> Outline:
    """Every partition's outline, combined; `statistics` False: without the point-in-time
    statistics' increments (`Outline.of`). `stages`: the command's order when it has decided it
    (`work.stages_of`: an inferred one reads the export)."""
    parts = partitions(folder)
    stages = stages or work.stages_of(settings, folder, now)
    return Outline.combine(run.map(work.outline, parts, settings=settings, now=now, as_of=as_of, stages=stages, with_history=with_history, fingerprint=fingerprint,
                                   statistics=statistics))


def export_span(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """When the export's first deal was created, and its newest time (what a whole export's
    `Tables.end` is: the default as-of of every command). None when no partition holds a deal."""
    return _joined(run.map(work.span, partitions(folder), settings=settings, now=now))


def _joined(spans) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    spans = [s for s in spans if s is not None]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def export_end(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp) -> pd.Timestamp | None:
    """The newest time of any partition; None when no partition holds a deal."""
    found = export_span(run, folder, settings, now)
    return found[1] if found is not None else None


def outs(parts: list[Path], out_dir: Path | None) -> list[Path | None]:
    """Each partition's output file in `out_dir` (made if missing), in partition order; None each: gathered."""
    if out_dir is None:
        return [None] * len(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [out_dir / f"part-{k:05d}.parquet" for k in range(len(parts))]


def features(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, out_dir: Path | None = None) -> tuple[FeatureSpec, pd.DataFrame | int]:
    """The feature frame of every deal open at as_of: a frame, or (with `out_dir`) one Parquet
    file per partition there and the number of rows written."""
    stages = work.stages_of(settings, folder, now)
    outline = first_pass(run, folder, settings, now, as_of, stages=stages)
    small = outline.tables()
    spec = make_spec(small, stages, segment_columns(settings, small), type_counts=outline.activity_types)
    stats = outline.statistics(spec.stat_keys)
    parts = partitions(folder)
    results = run.map(work.features, parts, outs(parts, out_dir), settings=settings, now=now, as_of=as_of, spec=spec, stats=stats)
    if out_dir is not None:
        return spec, int(sum(results))
    frame = pd.concat(results, ignore_index=True)
    return spec, frame.sort_values("opportunity_id", kind="stable").reset_index(drop=True)


@dataclass
class Scored:
    table: pd.DataFrame | None  # None when written per partition
    rows: int
    counts: dict[str, int]
    unknown_stages: list[str]
    drift: dict  # the run's drift from the bundle's training reference (`scoring.drift.of_run`); {} without one
    shadow: pd.DataFrame | None = None  # the shadow version's scores, gathered


def opportunities(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp) -> tuple[np.ndarray, tuple[pd.Timestamp, pd.Timestamp] | None]:
    """Every opportunity id of the export, and its span (`export_span`; None without a deal)."""
    pieces = run.map(work.ids, partitions(folder), settings=settings, now=now)
    return np.concatenate([ids for ids, _ in pieces]), _joined(span for _, span in pieces)


def score(
    run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp, bundle: Bundle, out_dir: Path | None = None, previous: pd.DataFrame | None = None,
    shadow: Bundle | None = None,
) -> Scored:
    """Every open deal scored by `bundle` (highest first when gathered), where every deal of the
    export stands and the run's drift; `previous`: the score history's last scores (`work.score`);
    `shadow`: a second version scoring the same deals."""
    parts = partitions(folder)
    results = run.map(work.score, parts, outs(parts, out_dir), settings=settings, now=now, as_of=as_of, bundle=bundle, previous=previous, shadow=shadow)
    counts: dict[str, int] = {}
    unknown: set[str] = set()
    for part in results:
        for k, v in part.counts.items():
            counts[k] = counts.get(k, 0) + v
        unknown |= set(part.unknown_stages)
    measured = drift.of_run(bundle, [part.tally for part in results])
    shadowed = _highest_first(pd.concat([part.shadow for part in results], ignore_index=True)) if shadow is not None else None
    if out_dir is not None:
        return Scored(None, int(sum(part.scores for part in results)), counts, sorted(unknown), measured, shadowed)
    table = _highest_first(pd.concat([part.scores for part in results], ignore_index=True))
    return Scored(table, len(table), counts, sorted(unknown), measured, shadowed)


def _highest_first(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["win_probability", "opportunity_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def stage_weights(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, as_of: pd.Timestamp) -> StageWeights:
    """Stage weights read no activity: fitted on the first pass's small tables of every deal."""
    stages = work.stages_of(settings, folder, now)
    small = first_pass(run, folder, settings, now, as_of, with_history=True, statistics=False, stages=stages).tables()
    return StageWeights(segment_columns(settings, small)).fit(small, stages, as_of)


def score_points(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, bundle: Bundle, points: pd.DataFrame, known_at: pd.Timestamp | None = None,
                 stages: StageOrder | None = None) -> pd.DataFrame:
    """`bundle`'s scores of (opportunity_id, as_of) points of any partition, in the points' order
    (the gate's comparison on backtest points, a forecast's model method); `stages` as `first_pass`."""
    points = points.reset_index(drop=True)
    stages = stages or work.stages_of(settings, folder, now)
    pieces = run.map(work.scored_points, partitions(folder), settings=settings, now=now, bundle=bundle, points=points, stages=stages, known_at=known_at)
    return pd.concat(pieces).sort_index()


def model_method(run: Runner, folder: Path, settings: Settings, now: pd.Timestamp, bundle: Bundle, stages: StageOrder):
    """A forecast's model method (analytics.forecast.Method) for a partitioned export: the
    deals open at t scored partition by partition, each partition as it stood at t."""

    def method(known, points: pd.DataFrame, t: pd.Timestamp):
        return score_points(run, folder, settings, now, bundle, points, known_at=t, stages=stages)["win_probability"].to_numpy(dtype=float)

    method.horizon_days = win_horizon_days(bundle)  # what the probability counts (analytics.forecast.ModelMethod)
    return method
