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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.forecast import TimeToWin
from analytics.stage_weights import StageWeights
from features.errors import NotEnoughData
from features.frame import FeatureSpec
from features.settings import Settings
from features.stages import StageOrder
from features.stays import by_deals, final_states
from features.tables import Tables
from features.times import to_utc
from scoring.bundle import Bundle, TargetModel
from scoring.models import RateModel
from training import backtest as bt_
from training import baselines, labels, plots, sufficiency
from training import models as fit
from training.data import TrainingData, WholeExport
from training.importance import family_signal
from training.metrics import sliced
from training.snapshots import Snapshots
from training.targets import Labelled, Target

log = logging.getLogger(__name__)

MIN_CLASS = fit.MIN_DEALS["lightgbm"]
REFIT_ROWS = 1_000_000  # labelled rows the served linear model or rates are refitted on (whole deals, a stable hash)
# labelled rows the served booster is refitted on (whole deals, a stable hash, on every engine).
# Measured at one fold date of a 300k-deal export (benchmarks/RESULTS.md, "The served booster's
# rows"): AUC rose 0.0013 from 1M rows to 2.5M, 0.0002 from 2M; the memory of the final fit
# grows with every row (the tree's peak at a million deals)
BOOSTER_ROWS = 4_000_000
SERVING = ("lightgbm", "logistic regression", "pooled rates", "lightgbm on recorded outcomes", "logistic regression on recorded outcomes")  # not plotted beside "model", which is one of them
NAMES = {"lightgbm": "LightGBM", "logistic regression": "logistic regression", "pooled rates": "pooled stage × segment rates", "configured weights": "the configured stage weights",
         "lightgbm on recorded outcomes": "LightGBM on recorded outcomes", "logistic regression on recorded outcomes": "logistic regression on recorded outcomes"}


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


def _configured(stages: StageOrder, spec: FeatureSpec) -> np.ndarray | None:
    """The CRM's configured weight of each stage level, when the config has them."""
    if not stages.config.configured_weights:
        return None
    conf = dict(zip(stages.open, stages.config.configured_weights, strict=True))
    return np.array([conf.get(s, np.nan) for s in spec.categories["stage"]], dtype=float)


def _candidates(target: str, stages: StageOrder, spec: FeatureSpec, min_class: int) -> list[bt_.Candidate]:
    """The rates pool toward what the rows themselves say (the overall rate): the configured
    weights say what a deal is worth in the end as the CRM's admins guessed it, not within the
    label's horizon; they compete as a candidate of their own, calibrated by the backtest, so
    they count only as far as the evidence shows them right."""
    stage_col = spec.columns.index("stage")
    conf = _configured(stages, spec)  # the rates' prior only when no row is labelled yet: all there is then
    out = [
        bt_.Candidate("lightgbm", min_class, lambda rows, at: fit.fit_booster(rows, spec)),
        bt_.Candidate("logistic regression", fit.MIN_DEALS["linear"], lambda rows, at: fit.fit_linear(rows, spec)),
        bt_.Candidate("pooled rates", 0, lambda rows, at: fit.fit_rates(rows, spec, conf if not (rows.w > 0).any() else None)),
    ]
    if target == "win":  # the outcome as recorded: more and fresher rows where deals take months; biased where losses are recorded late
        out += [
            bt_.Candidate("lightgbm on recorded outcomes", min_class, lambda rows, at: fit.fit_booster(rows, spec), labels="recorded"),
            bt_.Candidate("logistic regression on recorded outcomes", fit.MIN_DEALS["linear"], lambda rows, at: fit.fit_linear(rows, spec), labels="recorded"),
        ]
    if target == "win" and conf is not None:
        fixed = RateModel(stage_col, np.nan_to_num(conf, nan=0.5).tolist(), float(np.nanmean(conf)), {})
        out.append(bt_.Candidate("configured weights", 0, lambda rows, at: fixed))
    out.append(bt_.Candidate("stage rate", 0, lambda rows, at: fit.fit_rates(rows, spec, None, segments=False), serves=False))
    if target == "win":
        out.append(bt_.Candidate("naive Bayes (stage + segments)", 1, lambda rows, at: baselines.naive_bayes(rows, spec), serves=False))
    else:
        for col, name in (("days_in_stage", "days-in-stage rule"), ("days_since_activity", "days-since-activity rule")):
            j = spec.columns.index(col)
            out.append(bt_.Candidate(name, 1, lambda rows, at, j=j: _rule(rows, j), serves=False))
    return out


def _rule(rows: fit.Rows, j: int):
    rows = rows.used()
    predict = baselines.rule(rows.x[:, j], rows.y, rows.w)
    return lambda x: predict(x[:, j])


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
    `cutoff`: backtest only at fold dates from then on (default: as far back as the data allow)."""
    step = progress or (lambda _m: None)
    data = WholeExport(source) if isinstance(source, Tables) else source
    tables, end = data.tables, data.end
    step("point-in-time statistics")
    spec, stats = data.spec_and_stats(stages, settings)
    step("snapshots and features")
    snaps = data.snapshots(stages, settings, spec, stats, step)
    snaps.share_ids(tables.opportunities["opportunity_id"])
    won = any(final_states(part, stages)["state"].eq("won").any() for part in by_deals(tables.stage_history))
    if not won and not stages.config.configured_weights:
        raise NotEnoughData("no deal has been won yet and the config has no configured_weights: nothing to learn a win probability from")

    win, horizon = labels.win_target(tables, stages, snaps, end, settings.snapshots.every_days, settings.win.horizon_days)
    step(f"win label: won within {horizon.days} days of the date scored ({horizon.why})")
    targets = {"win": win, "stall": labels.stall_target(snaps, end)}
    models: dict[str, TargetModel] = {}
    results: dict[str, dict[str, dict]] = {}
    per_fold: dict[str, list[dict]] = {}
    served: dict[str, dict] = {}
    backtests: dict[str, bt_.TargetBacktest | None] = {}
    labelled: dict[str, tuple[int, int]] = {}
    for name, target in targets.items():
        cands = _candidates(name, stages, spec, min_class)
        if cutoff is not None:
            target = _from(target, to_utc(cutoff))
        bt = bt_.run(target, snaps, spec, cands, progress=step)
        backtests[name] = bt
        step(f"{name}: refit")
        rows = target.final()
        labelled[name] = rows.deals_by_outcome()
        if name == "win":  # read while every snapshot's final label is here anyway, not built again at the end
            reference, win_labelled = _reference(snaps, rows, spec), int((rows.w > 0).sum())
        if bt is None:
            chosen, kind = "pooled rates", "identity"
            why = "no backtest was possible, so no learned model can be shown to help: pooled rates from every labelled snapshot"
        else:
            final_deals = rows.deals_of_each_outcome()
            bt.supported = [c.name for c in cands if c.serves and (c.labels != "target" or final_deals >= c.min_deals)]
            chosen, (kind, _) = bt.chosen, bt.calibrated[bt.chosen]
            why = bt.why
        estimator, short = _refit_candidate(chosen, bt, target, rows, cands, spec, end, data, snaps)
        del rows  # every snapshot's label (30M rows at 3M deals): not beside the next target's backtest
        if short:
            why = f"{why}; refit on all data fell back to pooled rates: {short}"
            chosen, kind = "pooled rates", "identity"
        own = bt.own_folds(chosen) if bt is not None else None  # not the folds where the rates stood in for it
        if bt is not None and len(np.unique(bt.y[own & (bt.w > 0)])) < 2:
            own = np.ones(len(bt.y), dtype=bool)
        calibrator = fit.CALIBRATORS[kind](bt.predictions[chosen][own], bt.y[own], bt.w[own]) if bt is not None and kind != "identity" else fit.CALIBRATORS["identity"](None, None, None)
        models[name] = TargetModel(estimator, calibrator, f"{NAMES[chosen]}: {why}")
        served[name] = {"model": NAMES[chosen], "candidate": chosen, "kind": estimator.kind, "calibrator": calibrator.kind, "why": why,
                        "horizon_days": horizon.days if name == "win" else settings.stall.horizon_days}
        if bt is not None:
            results[name] = bt.pooled()
            per_fold[name] = bt.per_fold()
        if bt is not None and bt.stood_in.get("lightgbm"):
            log.info("%s: too few labelled deals for LightGBM at %d of %d fold dates; the pooled rates stood in there", name, len(bt.stood_in["lightgbm"]), len(bt.folds))

    step("reports and plots")
    signal = {name: family_signal(bt, snaps, spec, sufficiency.families(spec)) for name, bt in backtests.items() if bt is not None}
    bt_docs = {name: (None if bt is None else {"folds": [str(f.date()) for f in bt.folds], "pooled": results[name], "evaluated_deals": int(len(np.unique(bt.deal[bt.w > 0])))}) for name, bt in backtests.items()}
    who = _who_wins(backtests["win"], snaps, tables, stages) if backtests["win"] is not None else None
    report = sufficiency.report(tables, stages, spec, served, bt_docs, signal, data.activities(), end, labelled, who)
    slices, plot_files = _slices_and_plots(backtests, snaps, spec, models, workdir)

    step("stage weights")
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
        "win_labelled_snapshots": win_labelled,
        **{f"{n}_labelled_deals_{side}": labelled[n][k] for n in labelled for k, side in enumerate(("positive", "negative"))},
    }
    metadata = {
        "trained_at": str(pd.Timestamp.now(tz="UTC")),
        "data_start": str(tables.opportunities["created_at"].min()),
        "data_end": str(end),
        "data_fingerprint": data.fingerprint(),
        "evaluation": "rolling-origin backtest: at each fold date, trained on what was known then, scored on the deals open then against what happened within each label's horizon",
        "win_label": horizon.to_dict(),
        "backtest": {n: ({"folds": d["folds"], "evaluated_deals": d["evaluated_deals"], "per_fold": per_fold[n]} if d else None) for n, d in bt_docs.items()},
        "held_out": results,
        "served": served,
        "fallback": {n: s["why"] for n, s in served.items() if s["kind"] != "lightgbm"},
        "sufficiency": report,
        "refit": True,
        "counts": counts,
        "horizon_days": settings.stall.horizon_days,
        "stages": stages.config.model_dump(),
    }
    timing = TimeToWin().fit(tables, stages, end, horizon.days).to_frame()
    bundle = Bundle(spec, stats, models, weights.to_dict(), reference, grades, metadata, timing)
    held = _held_out(snaps, backtests)
    params = {**fit.PARAMS, "horizon_days": settings.stall.horizon_days, "snapshot_every_days": settings.snapshots.every_days, "min_class": min_class, "shrinkage": stats.shrinkage, "logistic_C": fit.LOGISTIC_C, "pooling": fit.POOLING}
    return TrainResult(bundle, results, per_fold, slices, counts, plot_files, held, report, params)


def _who_wins(bt: bt_.TargetBacktest, snaps: Snapshots, tables: Tables, stages: StageOrder) -> dict:
    """Among the backtest's deals that closed by the export's end, how well the served win
    probability told the won from the lost: a label within H days also rewards knowing *when*
    deals close (a deal near its usual close date), and this says whether it knows *which* win."""
    from training.metrics import bootstrap, metrics

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

    return Target(target.name, target.train, evaluate, target.final)


def _refit_candidate(name, bt, target: Target, labelled: Labelled, cands, spec, end, data: TrainingData, snaps: Snapshots):
    """The chosen candidate on every labelled row (of its own label); the booster where the data
    are (on an engine's workers for a partitioned export), with the backtest's median number of rounds."""
    by_name = {c.name: c for c in cands}
    if by_name[name].labels == "recorded":
        labelled = target.recorded(end)
    need = by_name[name].min_deals
    deals = labelled.deals_of_each_outcome()
    sample = labelled.sample(REFIT_ROWS)  # a linear model or rates learn nothing more past a million rows
    if deals < need:
        return by_name["pooled rates"].fit(sample.rows(snaps.x), end), f"{deals} deals of the rarer outcome, {need} needed for {NAMES[name]}"
    if name.startswith("lightgbm"):
        rounds = int(np.median(bt.rounds[name])) if bt is not None and bt.rounds.get(name) else None
        return data.fit_booster(labelled.sample(BOOSTER_ROWS), snaps, spec, rounds), None
    return by_name[name].fit(sample.rows(snaps.x), end), None


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
            shown = {"model": p, **{k: v for k, v in bt.predictions.items() if k not in SERVING}}
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
    from training.metrics import metrics

    data = WholeExport(source) if isinstance(source, Tables) else source
    scored = data.score(bundle, held.points)
    return {
        "win": metrics(held.y["win"], scored["win_probability"].to_numpy(), held.w["win"]),
        "stall": metrics(held.y["stall"], scored["stall_risk"].to_numpy(), held.w["stall"]),
    }
