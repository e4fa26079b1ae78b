"""One training run: snapshots → features → a rolling-origin backtest of every candidate and
baseline → the candidate with the lowest pooled log loss, refitted on every labelled snapshot
and calibrated on its out-of-fold predictions → stage weights → a bundle. MLflow is the
caller's business (training.registry), so this runs and tests without a tracking store.

Small pipelines are the common case: a few hundred closed deals. Nothing here sets a slice
aside that could starve; every closed deal teaches, and what serves is what the evidence chose,
said in the bundle, the run and /v1/model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.forecast import TimeToWin
from analytics.metrics import sliced
from analytics.stage_weights import StageWeights
from features.errors import NotEnoughData
from features.frame import FeatureSpec
from features.pit_stats import PointInTimeStats
from features.settings import Settings
from features.stages import StageOrder
from features.stays import by_deals, final_states
from features.tables import Tables
from features.times import to_utc
from scoring import drift
from scoring.bundle import Bundle, TargetModel
from scoring.models import NotKnown
from training import backtest as bt_
from training import fitting as fit
from training import labels, plots, sufficiency
from training.candidates import candidates_for
from training.data import TrainingData, WholeExport
from training.importance import family_signal
from training.labelled_snapshots import Snapshots
from training.targets import Labelled, Target

log = logging.getLogger(__name__)

MIN_CLASS = fit.MIN_DEALS["lightgbm"]
REFIT_ROWS = 1_000_000  # labelled rows the served linear model or rates are refitted on (whole deals, a stable hash)
# labelled rows the served booster is refitted on (whole deals, a stable hash, on every engine).
# Measured at one fold date of a 300k-deal export (benchmarks/RESULTS.md, "The served booster's
# rows"): AUC rose 0.0013 from 1M rows to 2.5M, 0.0002 from 2M; the memory of the final fit
# grows with every row (the tree's peak at a million deals)
BOOSTER_ROWS = 4_000_000


@dataclass
class HeldOut:
    """The backtest's evaluation points (deals open at each fold date, outcomes as known at the
    end) with this run's out-of-fold predictions, kept so a champion can be scored on them."""

    points: pd.DataFrame
    y: dict[str, np.ndarray]
    w: dict[str, np.ndarray]
    ours: dict[str, np.ndarray] = field(default_factory=dict)

    def since(self, t: pd.Timestamp) -> HeldOut:
        keep = (self.points["as_of"] >= t).to_numpy()
        return HeldOut(self.points[keep].reset_index(drop=True), {k: v[keep] for k, v in self.y.items()}, {k: v[keep] for k, v in self.w.items()}, {k: v[keep] for k, v in self.ours.items()})


@dataclass
class TrainResult:
    bundle: Bundle
    metrics: dict[str, dict[str, dict[str, float]]]  # target → model/baseline → pooled backtest metrics
    per_fold: dict[str, list[dict]]
    slices: dict[str, pd.DataFrame]
    counts: dict[str, int]
    plots: list[Path]
    held_out: HeldOut
    report: dict
    params: dict = field(default_factory=dict)
    baselines: dict[str, list[str]] = field(default_factory=dict)  # target → the candidates a served model must not fall behind (the floor, the CRM's prior)


def _reference(snaps: Snapshots, win: Labelled, spec: FeatureSpec) -> dict[str, dict[str, float]]:
    """Per stage, the median of each number among snapshots of deals that were won (a sample of
    whole deals when there are more than a backtest fold fits on)."""
    numeric = [c for c in spec.columns if c not in spec.categorical]
    won = win.where((win.w > 0) & (win.y == 1)).sample(bt_.LARGE_ROWS)  # one selection of every labelled row
    x = snaps.x[won.index]
    frame = pd.DataFrame(x[:, [spec.columns.index(c) for c in numeric]].astype(np.float64), columns=numeric)
    frame["stage"] = snaps.frame["stage"].iloc[won.index].to_numpy(dtype=object)  # the rows first: text of every snapshot would be millions of strings
    med = frame.groupby("stage")[numeric].median()
    return {str(stage): {k: float(v) for k, v in row.items() if pd.notna(v)} for stage, row in med.iterrows()}


def _stall_not_known(snaps: Snapshots, horizon_days: int) -> str:
    """Why stall risk is not known: a snapshot's stall label needs the whole horizon after it, so
    an export whose open deals span less than the horizon has none (Salesforce's dev-org sample:
    every record made at one moment). Not the configured win weight in its place (issue 40)."""
    span = (snaps.grid[-1] - snaps.grid[0]) / (86_400 * 10**9) if len(snaps.grid) else 0.0
    return (f"stall risk not known: no deal is labelled (none was watched for the stall horizon's {horizon_days} days) and the export "
            f"spans {span:.0f} days of open deals, too short to show which ones stall")


def train(
    source: Tables | TrainingData,
    stages: StageOrder,
    settings: Settings,
    cutoff: pd.Timestamp | None = None,
    workdir: Path | None = None,
    progress=None,
    min_class: int = MIN_CLASS,
) -> TrainResult:
    """`source`: a whole export, or one read by partition on an engine (training.partitioned).
    `cutoff`: backtest only at fold dates from then on (default: as far back as the data allow).

    Features and snapshots; the labels; per target, a backtest, the choice and the refit; the
    reports; the bundle."""
    step = progress or (lambda _m: None)
    data = WholeExport(source) if isinstance(source, Tables) else source
    spec, stats, snaps = _snapshots(data, stages, settings, step)
    _something_to_learn(data.tables, stages)
    win, horizon = labels.win_target(data.tables, stages, snaps, data.end, settings.snapshots.every_days, settings.win.horizon_days)
    step(f"win label: won within {horizon.days} days of the date scored ({horizon.why})")
    targets = {"win": win, "stall": labels.stall_target(snaps, data.end)}
    fitted = {name: _fit_target(name, target, data, snaps, spec, stages, settings, horizon, cutoff, min_class, step) for name, target in targets.items()}
    step("reports and plots")
    backtests = {name: f.backtest for name, f in fitted.items()}
    report, bt_docs = _report(data, stages, spec, snaps, fitted)
    models = {name: f.model for name, f in fitted.items()}
    slices, plot_files = _slices_and_plots(backtests, snaps, spec, models, workdir)
    step("stage weights")
    bundle, counts = _bundle(data, stages, settings, spec, stats, snaps, fitted, horizon, report, bt_docs)
    params = {**fit.PARAMS, "horizon_days": settings.stall.horizon_days, "snapshot_every_days": settings.snapshots.every_days, "min_class": min_class, "shrinkage": stats.shrinkage, "logistic_C": fit.LOGISTIC_C, "pooling": fit.POOLING}
    results = {name: f.pooled for name, f in fitted.items() if f.backtest is not None}
    per_fold = {name: f.per_fold for name, f in fitted.items() if f.backtest is not None}
    baselines = {name: [c.name for c in f.backtest.candidates.values() if c.floor or c.prior] for name, f in fitted.items() if f.backtest is not None}
    return TrainResult(bundle, results, per_fold, slices, counts, plot_files, _held_out(snaps, backtests), report, params, baselines)


def _snapshots(data: TrainingData, stages: StageOrder, settings: Settings, step) -> tuple[FeatureSpec, PointInTimeStats, Snapshots]:
    """The vocabulary and the point-in-time statistics, then every snapshot's features."""
    step("point-in-time statistics")
    spec, stats = data.spec_and_stats(stages, settings)
    step("snapshots and features")
    snaps = data.snapshots(stages, settings, spec, stats, step)
    snaps.share_ids(data.tables.opportunities["opportunity_id"])
    return spec, stats, snaps


def _something_to_learn(tables: Tables, stages: StageOrder) -> None:
    won = any(final_states(part, stages)["state"].eq("won").any() for part in by_deals(tables.stage_history))
    if not won and not stages.config.configured_weights:
        raise NotEnoughData("no deal has been won yet and the config has no configured_weights: nothing to learn a win probability from")


@dataclass
class _Fitted:
    """One target trained: the served model and why, its backtest and what the labels held."""

    model: TargetModel
    served: dict
    backtest: bt_.TargetBacktest | None
    labelled: tuple[int, int]  # deals with a positive and with a negative labelled row
    labelled_rows: int
    reference: dict | None = None  # the win target's medians of won deals per stage
    pooled: dict = field(default_factory=dict)
    per_fold: list = field(default_factory=list)


def _fit_target(name: str, target: Target, data: TrainingData, snaps: Snapshots, spec: FeatureSpec, stages: StageOrder, settings: Settings,
                horizon: labels.WinHorizon, cutoff: pd.Timestamp | None, min_class: int, step) -> _Fitted:
    """The target's backtest, the choice, the chosen candidate refitted on every labelled row
    and its calibrator fitted on its own folds."""
    horizon_days = horizon.days if name == "win" else settings.stall.horizon_days
    cands = candidates_for(name, stages, spec, min_class)
    fallback = next(c for c in cands if c.fallback)
    if cutoff is not None:
        target = _from(target, to_utc(cutoff))
    bt = bt_.run(target, snaps, spec, cands, progress=step)
    step(f"{name}: refit")
    rows = target.final()
    counted = rows.deals_by_outcome()
    reference = _reference(snaps, rows, spec) if name == "win" else None  # read while every snapshot's final label is here anyway
    labelled_rows = int((rows.w > 0).sum())
    if bt is None:
        chosen, kind = fallback, "identity"
        why = "no backtest was possible, so no learned model can be shown to help: pooled rates from every labelled snapshot"
    else:
        final_deals = rows.deals_of_each_outcome()
        bt.supported = [c.name for c in cands if c.serves and (c.labels != "target" or final_deals >= c.min_deals)]
        chosen, (kind, _) = bt.candidates[bt.chosen], bt.calibrated[bt.chosen]
        why = bt.why
    estimator, short = _refit_candidate(chosen, fallback, bt, target, rows, spec, data.end, data, snaps)
    recent, reach = _latest_window(target, rows, snaps, data.end, horizon_days)
    del rows  # every snapshot's label: not beside the next target's backtest
    if short:
        why = f"{why}; refit on all data fell back to pooled rates: {short}"
        chosen, kind = fallback, "identity"
    if name == "stall" and labelled_rows == 0:  # no snapshot was watched for the horizon: nothing shows which deals stall
        why = _stall_not_known(snaps, horizon_days)
        estimator = NotKnown(why)
    own = bt.own_folds(chosen.name) if bt is not None else None  # not the folds where the rates stood in for it
    if bt is not None and len(np.unique(bt.y[own & (bt.w > 0)])) < 2:
        own = np.ones(len(bt.y), dtype=bool)
    calibrator = fit.CALIBRATORS[kind](bt.predictions[chosen.name][own], bt.y[own], bt.w[own]) if bt is not None and kind != "identity" else fit.CALIBRATORS["identity"](None, None, None)
    shift, level = fit.level_shift(TargetModel(estimator, calibrator).predict(recent.x), recent.y, recent.w, reach) if len(recent.y) else (0.0, {"rows": 0, "why": "no window"})
    if shift:
        calibrator = calibrator.leveled(shift)
    display = "nothing" if isinstance(estimator, NotKnown) else chosen.display
    served = {"model": display, "candidate": chosen.name, "kind": estimator.kind, "calibrator": calibrator.kind, "why": why,
              "horizon_days": horizon_days, "level": {**level, "window_days": _window_days(horizon_days)}}
    boosters = [c.name for c in cands if c.rank == bt_.BOOSTER and c.labels == "target"]
    if bt is not None and any(bt.stood_in.get(b) for b in boosters):
        log.info("%s: too few labelled deals for LightGBM at %d of %d fold dates; the pooled rates stood in there", name, len(bt.stood_in[boosters[0]]), len(bt.folds))
    return _Fitted(TargetModel(estimator, calibrator, f"{display}: {why}"), served, bt, counted, labelled_rows, reference,
                   bt.pooled() if bt is not None else {}, bt.per_fold() if bt is not None else [])


def _window_days(horizon_days: int) -> int:
    return max(horizon_days, 28)


def _latest_window(target: Target, rows: Labelled, snaps: Snapshots, end: pd.Timestamp, horizon_days: int) -> tuple[fit.Rows, np.ndarray]:
    """The rows that set the served level, and how much of each one's outcome is known by the
    end (its reach, `labels._followed_so_far`). The win: the snapshots of the `_window_days`
    before the export's end and the H before them, the newest followed only part of H. The
    stall: the labelled snapshots of the latest window whose outcomes are all known. A
    backtest's folds are older, and a young org's base rate moves from month to month; the level
    they teach the calibrator is a past one (issue 40: 0.002 served where 0.039 came)."""
    if target.recent is not None:
        recent, reach = target.recent(_window_days(horizon_days))
        keep = recent.sampled(bt_.LARGE_ROWS)
        return recent.where(keep).rows(snaps.x), reach[keep]
    until = end.value - horizon_days * 86_400 * 10**9
    times = snaps.grid[snaps.slot[rows.index]]
    keep = (times > until - _window_days(horizon_days) * 86_400 * 10**9) & (times <= until) & (rows.w > 0)
    recent = rows.where(keep).sample(bt_.LARGE_ROWS)
    return recent.rows(snaps.x), np.ones(len(recent.y))


def _report(data: TrainingData, stages: StageOrder, spec: FeatureSpec, snaps: Snapshots, fitted: dict[str, _Fitted]) -> tuple[dict, dict]:
    """The data-sufficiency report (with each family's signal and who wins) and each target's
    backtest in brief."""
    backtests = {name: f.backtest for name, f in fitted.items()}
    signal = {name: family_signal(bt, snaps, spec, sufficiency.families(spec)) for name, bt in backtests.items() if bt is not None}
    bt_docs = {name: (None if bt is None else {"folds": [str(f.date()) for f in bt.folds], "pooled": fitted[name].pooled, "evaluated_deals": int(len(np.unique(bt.deal[bt.w > 0]))),
                                               "floor": next((c.name for c in bt.candidates.values() if c.floor), None)}) for name, bt in backtests.items()}
    who = _who_wins(backtests["win"], snaps, data.tables, stages) if backtests["win"] is not None else None
    served = {name: f.served for name, f in fitted.items()}
    labelled = {name: f.labelled for name, f in fitted.items()}
    return sufficiency.report(data.tables, stages, spec, served, bt_docs, signal, data.activities(), data.end, labelled, who), bt_docs


def _bundle(data: TrainingData, stages: StageOrder, settings: Settings, spec: FeatureSpec, stats: PointInTimeStats, snaps: Snapshots,
            fitted: dict[str, _Fitted], horizon: labels.WinHorizon, report: dict, bt_docs: dict) -> tuple[Bundle, dict]:
    """Everything serving reads: the models, stage weights, grades, forecast timing, and the
    record of how they were made."""
    tables, end = data.tables, data.end
    models = {name: f.model for name, f in fitted.items()}
    backtests = {name: f.backtest for name, f in fitted.items()}
    served = {name: f.served for name, f in fitted.items()}
    labelled = {name: f.labelled for name, f in fitted.items()}
    weights = StageWeights(spec.segment_columns).fit(tables, stages, end)
    win_bt = backtests["win"]
    graded = win_bt.served_predictions() if win_bt is not None and len(win_bt.y) else models["win"].predict(snaps.x[np.arange(len(snaps))])
    grades = [float(q) for q in np.quantile(graded, [0.75, 0.5, 0.25])] if len(graded) else [0.75, 0.5, 0.25]
    counts = {
        "opportunities": int(len(tables.opportunities)),
        "snapshots": int(len(snaps)),
        "won": report["closed"]["won"],
        "lost": report["closed"]["lost"],
        **{f"{n}_folds": len(bt.folds) if bt is not None else 0 for n, bt in backtests.items()},
        **{f"{n}_evaluated_rows": int((bt.w > 0).sum()) if bt is not None else 0 for n, bt in backtests.items()},
        "win_labelled_snapshots": fitted["win"].labelled_rows,
        **{f"{n}_labelled_deals_{side}": labelled[n][k] for n in labelled for k, side in enumerate(("positive", "negative"))},
    }
    metadata = {
        "trained_at": str(pd.Timestamp.now(tz="UTC")),
        "data_start": str(tables.opportunities["created_at"].min()),
        "data_end": str(end),
        "data_fingerprint": data.fingerprint(),
        "evaluation": "rolling-origin backtest: at each fold date, trained on what was known then, scored on the deals open then against what happened within each label's horizon",
        "win_label": horizon.to_dict(),
        "backtest": {n: ({"folds": d["folds"], "evaluated_deals": d["evaluated_deals"], "per_fold": fitted[n].per_fold} if d else None) for n, d in bt_docs.items()},
        "held_out": {name: f.pooled for name, f in fitted.items() if f.backtest is not None},
        "served": served,
        "fallback": {n: s["why"] for n, s in served.items() if s["kind"] != "lightgbm"},
        "sufficiency": report,
        "refit": True,
        "counts": counts,
        "horizon_days": settings.stall.horizon_days,
        "stages": stages.config.model_dump(),
    }
    metadata["drift_reference"] = _drift_reference(snaps, spec, models["win"])
    timing = TimeToWin().fit(tables, stages, end, horizon.days).to_frame()
    return Bundle(spec, stats, models, weights.to_dict(), fitted["win"].reference, grades, metadata, timing), counts


DRIFT_DATES = 8  # the latest snapshot dates: the pipelines most like the one scored next
DRIFT_ROWS = 50_000


def _drift_reference(snaps: Snapshots, spec: FeatureSpec, win: TargetModel) -> dict:
    """The open pipelines of the latest snapshot dates, as the served win model sees them: what
    `oppscore monitor` measures each scoring run's pipeline against (`scoring.drift`)."""
    times = np.unique(snaps.time)
    rows = np.flatnonzero(snaps.time >= times[-DRIFT_DATES:][0]) if len(times) else np.arange(0)
    if len(rows) > DRIFT_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, DRIFT_ROWS, replace=False))
    x = snaps.x[rows]
    return drift.reference(x, spec, win.predict(x) if len(rows) else np.zeros(0))


def _who_wins(bt: bt_.TargetBacktest, snaps: Snapshots, tables: Tables, stages: StageOrder) -> dict:
    """Among the backtest's deals that closed by the export's end, how well the served win
    probability told the won from the lost: a label within H days also rewards knowing *when*
    deals close (a deal near its usual close date), and this says whether it knows *which* win."""
    from analytics.metrics import bootstrap, metrics

    state = pd.concat([final_states(part, stages)["state"] for part in by_deals(tables.stage_history)])
    outcome = pd.Series(snaps.ids[bt.deal], dtype=object).map(state).to_numpy()
    keep = (bt.w > 0) & np.isin(outcome, ["won", "lost"])
    y, p = (outcome[keep] == "won").astype(float), bt.served_predictions()[keep]
    if len(np.unique(y)) < 2:
        return {}
    return {"auc": metrics(y, p)["auc"], "interval_90": bootstrap(y, p, np.ones(len(y)), bt.deal[keep]).get("auc"), "points": int(keep.sum())}


def _from(target: Target, cutoff: pd.Timestamp) -> Target:
    """The target with evaluation only at fold dates from `cutoff` on."""

    def evaluate(at: pd.Timestamp):
        rows, y, w = target.evaluate(at)
        return (rows, y, w) if at >= cutoff else (rows[:0], y[:0], w[:0])

    return replace(target, evaluate=evaluate)


def _refit_candidate(cand: bt_.Candidate, fallback: bt_.Candidate, bt, target: Target, labelled: Labelled, spec, end, data: TrainingData, snaps: Snapshots):
    """The chosen candidate on every labelled row (of its own label); the booster where the data
    are (on an engine's workers for a partitioned export), with the backtest's median number of rounds."""
    if cand.labels == "recorded":
        labelled = target.recorded(end)
    deals = labelled.deals_of_each_outcome()
    sample = labelled.sample(REFIT_ROWS)  # a linear model or rates learn nothing more past a million rows
    if deals < cand.min_deals:
        return fallback.fit(sample.rows(snaps.x), end), f"{deals} deals of the rarer outcome, {cand.min_deals} needed for {cand.display}"
    if cand.rank == bt_.BOOSTER:
        rounds = int(np.median(bt.rounds[cand.name])) if bt is not None and bt.rounds.get(cand.name) else None
        return data.fit_booster(labelled.sample(BOOSTER_ROWS), snaps, spec, rounds), None
    return cand.fit(sample.rows(snaps.x), end), None


def _slices_and_plots(backtests, snaps, spec, models, workdir):
    slices, files = {}, []
    for name, bt in backtests.items():
        if bt is None:
            continue
        p = bt.served_predictions()
        frame = snaps.frame.iloc[bt.rows].reset_index(drop=True)
        slices[f"{name}_by_stage"] = sliced(bt.y, p, bt.w, frame["stage"])
        for col in spec.segment_columns:
            slices[f"{name}_by_{col}"] = sliced(bt.y, p, bt.w, frame[col])
        if workdir is not None and (bt.w > 0).sum() >= 20:
            workdir.mkdir(parents=True, exist_ok=True)
            shown = {"model": p, **{k: v for k, v in bt.predictions.items() if not bt.candidates[k].serves or bt.candidates[k].prior}}
            files.append(plots.calibration(name, bt.y, shown, bt.w, workdir / f"{name}_calibration.png"))
            files.append(plots.gain(name, bt.y, shown, bt.w, workdir / f"{name}_gain.png"))
        booster = models[name].booster
        if workdir is not None and booster is not None:
            files.append(plots.importance(name, spec.columns, booster.feature_importance("gain"), workdir / f"{name}_importance.png"))
    return slices, files


def _held_out(snaps: Snapshots, backtests: dict) -> HeldOut:
    """Both backtests' evaluation points (each target has its own fold dates: stall labels need
    a horizon to pass), each target's labels and weights where it was evaluated, 0 elsewhere."""
    done = {t: b for t, b in backtests.items() if b is not None}
    if "win" not in done:
        empty = snaps.points(np.arange(0))
        return HeldOut(empty, {"win": np.zeros(0), "stall": np.zeros(0)}, {"win": np.zeros(0), "stall": np.zeros(0)}, {})
    rows = np.unique(np.concatenate([np.asarray(b.rows) for b in done.values()]))
    y, w, ours = {}, {}, {}
    for target in ("win", "stall"):
        y[target], w[target], ours[target] = np.zeros(len(rows)), np.zeros(len(rows)), np.full(len(rows), np.nan)
        if target in done:
            at = np.searchsorted(rows, np.asarray(done[target].rows))
            y[target][at], w[target][at], ours[target][at] = done[target].y, done[target].w, done[target].served_predictions()
    return HeldOut(snaps.points(rows), y, w, ours)


def backtest_points(tables: Tables, stages: StageOrder, settings: Settings, cutoff: pd.Timestamp | None = None) -> HeldOut:
    """The evaluation points a training run would backtest on (from `cutoff`), without training:
    what `oppscore evaluate` scores registered versions on."""
    data = WholeExport(tables)
    spec, stats = data.spec_and_stats(stages, settings)
    snaps = data.snapshots(stages, settings, spec, stats, None)
    target, _ = labels.win_target(tables, stages, snaps, tables.end, settings.snapshots.every_days, settings.win.horizon_days)
    folds = bt_.fold_dates(target, snaps)
    rows, ys, ws = [], [], []
    for at in folds:
        if cutoff is not None and at < to_utc(cutoff):
            continue
        r, y, w = target.evaluate(at)
        rows.append(r), ys.append(y), ws.append(w)
    if not rows:
        raise NotEnoughData("no backtest date" + (f" from {cutoff}" if cutoff is not None else "") + " has open deals whose outcome is known")
    r = np.concatenate(rows)
    stalled = snaps.stalled[r]
    return HeldOut(snaps.points(r), {"win": np.concatenate(ys), "stall": np.nan_to_num(stalled)}, {"win": np.concatenate(ws), "stall": (~np.isnan(stalled)).astype(float)})


def evaluate_on(bundle: Bundle, source: Tables | TrainingData, held: HeldOut) -> dict[str, dict[str, float]]:
    """Another bundle's metrics on the same evaluation points (the promotion gate's comparison)."""
    from analytics.metrics import metrics

    data = WholeExport(source) if isinstance(source, Tables) else source
    scored = data.score(bundle, held.points)
    return {
        "win": metrics(held.y["win"], scored["win_probability"].to_numpy(), held.w["win"]),
        "stall": metrics(held.y["stall"], scored["stall_risk"].to_numpy(), held.w["stall"]),
    }
