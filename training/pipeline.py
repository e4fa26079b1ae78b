"""One training run: snapshots → labels → time split → both models → calibration →
evaluation beside baselines → stage weights → a bundle. MLflow is the caller's business
(training.registry), so this runs and tests without a tracking store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.forecast import TimeToWin
from analytics.stage_weights import StageWeights
from features.errors import NotEnoughData
from features.frame import FeatureSpec, build_features, make_spec, segment_columns, to_model_frame
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.snapshots import snapshot_points
from features.stages import StageOrder
from features.tables import Tables
from scoring.bundle import Bundle, Calibrator, TargetModel
from training import baselines, plots
from training.censoring import CloseTimeModel, first_close, win_weights
from training.labels import stalled_label, won_label
from training.metrics import metrics, sliced
from training.models import PARAMS, fit_booster, fit_calibrator
from training.split import TimeSplit, make_split

log = logging.getLogger(__name__)

MIN_CLASS = 40  # fewer closed wins or losses than this: no booster, the stage rate instead
SLICES = ("train", "valid", "calib", "test")


@dataclass
class HeldOut:
    """The held-out rows with their labels and weights, kept so a champion can be scored on them."""

    points: pd.DataFrame
    y: dict[str, np.ndarray]
    w: dict[str, np.ndarray]


@dataclass
class TrainResult:
    bundle: Bundle
    split: TimeSplit
    metrics: dict[str, dict[str, dict[str, float]]]  # target → model/baseline → metric → value
    slices: dict[str, pd.DataFrame]
    counts: dict[str, int]
    plots: list[Path]
    held_out: HeldOut
    params: dict = field(default_factory=dict)


def _labels(tables: Tables, stages: StageOrder, points: pd.DataFrame, part: pd.Series, split: TimeSplit, horizon: int):
    y_win = np.full(len(points), np.nan)
    y_stall = np.full(len(points), np.nan)
    for name in SLICES:
        m = (part == name).to_numpy()
        if not m.any():
            continue
        known = split.known_at(name)
        y_win[m] = won_label(tables, stages, points[m], known)
        y_stall[m] = stalled_label(tables, stages, points[m].reset_index(drop=True), horizon, known)
    return y_win, y_stall


def _win_weights(tables: Tables, stages: StageOrder, points: pd.DataFrame, part: pd.Series, split: TimeSplit, y_win: np.ndarray) -> np.ndarray:
    closes = first_close(tables.stage_history, [stages.config.won, stages.config.lost], points)
    train = (part == "train").to_numpy()
    model = CloseTimeModel().fit(points["as_of"][train].reset_index(drop=True), closes[train].reset_index(drop=True), split.tune_start)
    w = np.zeros(len(points))
    for name in SLICES:
        m = (part == name).to_numpy()
        w[m] = win_weights(model, points["as_of"][m].reset_index(drop=True), split.known_at(name), ~np.isnan(y_win[m]))
    return w


def _reference(frame: pd.DataFrame, y_win: np.ndarray, spec: FeatureSpec) -> dict[str, dict[str, float]]:
    """Per stage, the median of each number among snapshots of deals that were won."""
    numeric = [c for c in spec.columns if c not in spec.categorical]
    won = frame[(y_win == 1)]
    med = won.groupby("stage")[numeric].median()
    return {str(stage): {k: float(v) for k, v in row.items() if pd.notna(v)} for stage, row in med.iterrows()}


def _fit_target(name, x, y, w, part, ids, min_class) -> tuple[TargetModel, dict]:
    tr, va, ca = ((part == s).to_numpy() & (w > 0) for s in ("train", "valid", "calib"))
    # what counts is how many deals, not snapshots: one long deal gives many correlated rows
    pos, neg = int(ids[tr & (y == 1)].nunique()), int(ids[tr & (y == 0)].nunique())
    rates = baselines.stage_rate(x[tr], y[tr], w[tr]) if tr.any() else {}
    if min(pos, neg) < min_class or va.sum() < 20 or ca.sum() < 20:
        reason = (
            f"{name}: {pos} opportunities with a positive and {neg} with a negative label in training, "
            f"{int(va.sum())} early-stopping and {int(ca.sum())} calibration rows (need {min_class} "
            "opportunities of each class and 20 rows per slice): "
            "serving the stage rate learned from the data instead of a model"
        )
        log.warning(reason)
        return TargetModel(None, Calibrator("identity", {}), rates, reason), {"best_iteration": 0}
    booster = fit_booster(x[tr], y[tr], w[tr], x[va], y[va], w[va])
    cal = fit_calibrator(booster.predict(x[ca]), y[ca], w[ca], check=(booster.predict(x[va]), y[va], w[va]))
    return TargetModel(booster, cal), {"best_iteration": int(booster.best_iteration), "calibrator": cal.kind}


@dataclass
class Labelled:
    """Snapshots with their slice, labels (NaN: unknown) and weights (0: not used)."""

    points: pd.DataFrame
    split: TimeSplit
    part: pd.Series
    y_win: np.ndarray
    y_stall: np.ndarray
    w_win: np.ndarray
    w_stall: np.ndarray

    def held_out(self) -> HeldOut:
        test = (self.part == "test").to_numpy()
        return HeldOut(
            self.points[test].reset_index(drop=True),
            {"win": np.nan_to_num(self.y_win[test]), "stall": np.nan_to_num(self.y_stall[test])},
            {"win": self.w_win[test], "stall": self.w_stall[test]},
        )


def label_points(tables: Tables, stages: StageOrder, settings: Settings, cutoff: pd.Timestamp | None = None) -> Labelled:
    points = snapshot_points(tables, stages, every_days=settings.snapshots.every_days)
    if len(points) < 50:
        raise NotEnoughData(f"only {len(points)} training snapshots (every {settings.snapshots.every_days} days while open); need at least 50")
    split = make_split(points["as_of"].min(), tables.end, cutoff)
    part = split.slice_of(points["as_of"], points["opportunity_id"])
    y_win, y_stall = _labels(tables, stages, points, part, split, settings.stall.horizon_days)
    w_win = _win_weights(tables, stages, points, part, split, y_win)
    w_stall = (~np.isnan(y_stall)).astype(float)
    return Labelled(points, split, part, y_win, y_stall, w_win, w_stall)


def train(
    tables: Tables,
    stages: StageOrder,
    settings: Settings,
    cutoff: pd.Timestamp | None = None,
    workdir: Path | None = None,
    progress=None,
    min_class: int = MIN_CLASS,
) -> TrainResult:
    step = progress or (lambda _m: None)
    horizon = settings.stall.horizon_days
    step("snapshots and labels")
    labelled = label_points(tables, stages, settings, cutoff)
    points, split, part = labelled.points, labelled.split, labelled.part
    y_win, y_stall, w_win, w_stall = labelled.y_win, labelled.y_stall, labelled.w_win, labelled.w_stall
    step("point-in-time statistics")
    spec = make_spec(tables.as_of(split.tune_start, stages), stages, segment_columns(settings, tables))
    stats = PointInTimeStats(spec.stat_keys).fit(tables, stages)
    frame = build_features(tables, points, spec, stats, progress=step)
    x = to_model_frame(frame, spec)
    y_win0, y_stall0 = np.nan_to_num(y_win), np.nan_to_num(y_stall)

    step("win model")
    win_model, win_info = _fit_target("win", x, y_win0, w_win, part, frame["opportunity_id"], min_class)
    step("stall model")
    stall_model, stall_info = _fit_target("stall", x, y_stall0, w_stall, part, frame["opportunity_id"], min_class)

    step("baselines and evaluation")
    test = (part == "test").to_numpy()
    tr = (part == "train").to_numpy()
    ca = (part == "calib").to_numpy()
    results: dict[str, dict[str, dict[str, float]]] = {"win": {}, "stall": {}}
    preds: dict[str, dict[str, np.ndarray]] = {"win": {}, "stall": {}}
    for target, model, y, w in (("win", win_model, y_win0, w_win), ("stall", stall_model, y_stall0, w_stall)):
        p_model = model.predict(x[test])
        preds[target]["model" if model.booster is not None else "model (stage-rate fallback)"] = p_model
        trw = tr & (w > 0)
        rates = baselines.stage_rate(x[trw], y[trw], w[trw])
        default = float(np.average(y[trw], weights=w[trw])) if trw.any() else 0.5
        preds[target]["stage rate"] = x.loc[test, "stage"].astype(object).map(rates).fillna(default).to_numpy(dtype=float)
        if trw.sum() >= 50 and len(np.unique(y[trw])) == 2:
            preds[target]["logistic regression"] = baselines.fit_logistic(spec, x[trw], y[trw], w[trw])(x[test])
        caw = ca & (w > 0)
        if target == "win" and stages.config.configured_weights:
            conf = dict(zip(stages.open, stages.config.configured_weights, strict=True))
            preds[target]["configured weights"] = x.loc[test, "stage"].astype(object).map(conf).to_numpy(dtype=float)
        if target == "stall" and caw.sum() >= 20:
            for col, label in (("days_in_stage", "days-in-stage rule"), ("days_since_activity", "days-since-activity rule")):
                fitted = baselines.rule(frame.loc[caw, col].to_numpy(dtype=float), y[caw], w[caw])
                preds[target][label] = fitted(frame.loc[test, col].to_numpy(dtype=float))
        for name, p in preds[target].items():
            results[target][name] = metrics(y[test], p, w[test])

    slice_tables = {}
    for target, y, w in (("win", y_win0, w_win), ("stall", y_stall0, w_stall)):
        p = next(iter(preds[target].values()))
        tw = w[test]
        slice_tables[f"{target}_by_stage"] = sliced(y[test], p, tw, frame.loc[test, "stage"].reset_index(drop=True))
        for col in spec.segment_columns:
            slice_tables[f"{target}_by_{col}"] = sliced(y[test], p, tw, frame.loc[test, col].reset_index(drop=True))

    plot_files: list[Path] = []
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        for target, y, w in (("win", y_win0, w_win), ("stall", y_stall0, w_stall)):
            if (w[test] > 0).sum() >= 20:
                plot_files.append(plots.calibration(target, y[test], preds[target], w[test], workdir / f"{target}_calibration.png"))
                plot_files.append(plots.gain(target, y[test], preds[target], w[test], workdir / f"{target}_gain.png"))
            model = win_model if target == "win" else stall_model
            if model.booster is not None:
                plot_files.append(plots.importance(target, spec.columns, model.booster.feature_importance("gain"), workdir / f"{target}_importance.png"))

    step("stage weights")
    weights = StageWeights(spec.segment_columns).fit(tables, stages, tables.end)
    calib_win = win_model.predict(x[ca]) if ca.any() else win_model.predict(x)
    grades = [float(q) for q in np.quantile(calib_win, [0.75, 0.5, 0.25])] if len(calib_win) else [0.75, 0.5, 0.25]
    counts = {
        "opportunities": int(len(tables.opportunities)),
        "snapshots": int(len(points)),
        **{f"{s}_snapshots": int((part == s).sum()) for s in SLICES},
        **{f"{s}_win_labelled": int(((part == s).to_numpy() & (w_win > 0)).sum()) for s in SLICES},
        **{f"{s}_stall_labelled": int(((part == s).to_numpy() & (w_stall > 0)).sum()) for s in SLICES},
    }
    metadata = {
        "trained_at": str(pd.Timestamp.now(tz="UTC")),
        "data_start": str(tables.opportunities["created_at"].min()),
        "data_end": str(tables.end),
        "split": split.describe(),
        "counts": counts,
        "held_out": results,
        "win": win_info,
        "stall": stall_info,
        "fallback": {t: m.fallback_reason for t, m in (("win", win_model), ("stall", stall_model)) if m.fallback_reason},
        "refit": False,
        "horizon_days": horizon,
        "stages": stages.config.model_dump(),
    }
    timing = TimeToWin().fit(tables, stages, tables.end).to_frame()
    bundle = Bundle(spec, stats, {"win": win_model, "stall": stall_model}, weights.to_dict(), _reference(frame, y_win, spec), grades, metadata, timing)
    held = labelled.held_out()
    params = {**PARAMS, "horizon_days": horizon, "snapshot_every_days": settings.snapshots.every_days, "min_class": min_class, "shrinkage": stats.shrinkage}
    return TrainResult(bundle, split, results, slice_tables, counts, plot_files, held, params)


def evaluate_on(bundle: Bundle, tables: Tables, held: HeldOut) -> dict[str, dict[str, float]]:
    """Another bundle's metrics on the same held-out rows (the promotion gate's comparison)."""
    from scoring.score import score_points

    scored = score_points(bundle, tables, held.points, with_factors=False)
    return {
        "win": metrics(held.y["win"], scored["win_probability"].to_numpy(), held.w["win"]),
        "stall": metrics(held.y["stall"], scored["stall_risk"].to_numpy(), held.w["stall"]),
    }
