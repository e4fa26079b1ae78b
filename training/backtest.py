"""A rolling-origin backtest: every closed deal teaches, every model figure is out of sample.

At each fold date F (the latest date whose open deals have mostly closed by the export's end,
then every four weeks back), each candidate is trained on what was known at F — snapshots up
to F, labelled as known at F — and predicts the deals open at F; those predictions are scored
against the outcomes known at the export's end. Evaluation labels come from after F (that is
what a backtest is); features never do (they are point-in-time by construction).

Pooling the folds gives every model and baseline a figure on the same rows, with a bootstrap
interval by deal. The candidate with the lowest pooled log loss (after a calibrator fitted
leave-one-fold-out) is the one that serves; its calibrator is then fitted on all of its
out-of-fold predictions, so calibration never starves on a slice.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analytics.metrics import better_beyond_doubt, bootstrap, metrics
from features.frame import FeatureSpec
from training import cores
from training import fitting as fit
from training.labelled_snapshots import Snapshots
from training.targets import Target

log = logging.getLogger(__name__)

FOLD_SPACING_DAYS = 28
MAX_FOLDS = 8
MIN_EVAL_ROWS = 5  # labelled open deals at a fold date, or the date teaches nothing
MIN_TRAIN_DEALS = 3  # closed deals of each outcome known at a fold date
LARGE_ROWS = 150_000  # fold training rows past which fewer folds are enough (and are sampled)
RATES, LINEAR, BOOSTER = 0, 1, 2  # what a candidate can learn, and so how many deals it needs


def fold_dates(target: Target, snaps: Snapshots) -> list[pd.Timestamp]:
    """From the latest date with enough labelled open deals, every four weeks back, while the
    date's training rows hold closed deals of both outcomes; oldest first."""
    grid = snaps.grid
    chosen: list[pd.Timestamp] = []
    for t in grid[::-1]:
        at = pd.Timestamp(int(t), tz="UTC")
        if chosen and (chosen[-1] - at).days < FOLD_SPACING_DAYS:
            continue
        _, y, w = target.evaluate(at)
        if (w > 0).sum() < MIN_EVAL_ROWS:
            continue
        rows = target.train(at)
        deals, large = rows.deals_of_each_outcome(), (rows.w > 0).sum() > LARGE_ROWS
        del rows  # one date's rows at a time: never the next date's rows built beside these
        if deals < MIN_TRAIN_DEALS:
            break  # earlier dates know even less
        chosen.append(at)
        if len(chosen) >= (4 if large else MAX_FOLDS):
            break
    return chosen[::-1]


@dataclass(frozen=True)
class Candidate:
    """One way of predicting, fitted anew at every fold: what it is, what it needs, and where
    it stands in the choice (`TargetBacktest._choice`), so nothing is matched by its name."""

    name: str  # the key of its figures (metrics, plots, the registry's gate)
    fit: Callable[[fit.Rows, pd.Timestamp], object]  # (rows known at a date, the date) → an estimator (scoring.models, a `models.FittedBooster`) or a predict function
    title: str = ""  # how a person reads it ("LightGBM"); the name when empty
    min_deals: int = 0  # closed deals of each outcome it needs; below, the fallback stands in
    rank: int = RATES  # RATES, LINEAR or BOOSTER: a more capable candidate needs more deals, and displaces a less capable one only beyond doubt
    serves: bool = True  # False: a baseline, shown beside the served model
    labels: str = "target"  # what it learns from: the target's label, or "recorded" (`Target.recorded`); it is judged on the target's
    fallback: bool = False  # stands in where another lacks deals, and serves when nothing else may (the pooled rates)
    floor: bool = False  # the ranking a served learned model must not fall below (the stage rate)
    prior: bool = False  # the CRM's configured weights: a rival, never the default

    @property
    def display(self) -> str:
        return self.title or self.name

    @property
    def simplicity(self) -> tuple[bool, int, bool]:
        """Ties go to the simplest: the target's own label, fewer ranks, the CRM's prior first."""
        return (self.labels != "target", self.rank, not self.prior)

    def twin_of(self, other: Candidate) -> bool:
        """The same kind of model as `other` learning from the outcomes as recorded."""
        return self.labels == "recorded" and other.labels == "target" and self.rank == other.rank and not other.prior and not other.fallback


@dataclass
class TargetBacktest:
    """The backtest of one target: folds, pooled out-of-fold predictions, the choice."""

    name: str
    folds: list[pd.Timestamp]
    rows: np.ndarray  # snapshot row of each evaluation point
    fold: np.ndarray  # fold index of each evaluation point
    y: np.ndarray
    w: np.ndarray
    deal: np.ndarray  # each evaluation point's deal (a code into the snapshots' ids)
    predictions: dict[str, np.ndarray]  # candidate or baseline → out-of-fold probability
    calibrated: dict[str, tuple[str, np.ndarray]]  # serving candidate → (calibrator kind, cross-fitted predictions)
    stood_in: dict[str, list[int]]  # candidate → the folds where the rates stood in for it (too few deals)
    rounds: dict[str, list[int]] = field(default_factory=dict)  # per booster candidate, its rounds per fold
    fold_models: dict[str, list] = field(default_factory=dict)  # candidate → estimator per fold
    supported: list[str] | None = None  # the serving candidates every labelled row supports (set before the choice is read; None: all)
    candidates: dict[str, Candidate] = field(default_factory=dict)  # by name

    @property
    def chosen(self) -> str:
        return self._choice[0]

    def tried(self, name: str) -> bool:
        """Whether the backtest says anything of the candidate itself: fitted (not stood in
        for by the rates) at the last fold, the one nearest the final fit. One never fitted
        would serve with a calibrator learned on the rates' predictions."""
        return len(self.folds) - 1 not in self.stood_in.get(name, [])

    def own_folds(self, name: str) -> np.ndarray:
        """The evaluation points of the folds where the candidate was itself fitted: what its
        served calibrator is fitted on."""
        return ~np.isin(self.fold, self.stood_in.get(name, []))

    @property
    def why(self) -> str:
        """Why the chosen candidate serves, in words."""
        return self._choice[1]

    @cached_property
    def _choice(self) -> tuple[str, str]:
        """The most capable candidate every labelled row supports (`supported`) serves, learning
        from wins within the horizon or from the outcomes as recorded (its twin), whichever had
        the lower backtest log loss; unless the backtest shows a more capable one (`rank`)
        better beyond doubt (`_better`); the best of those then. A fold learns from the snapshots a label's
        horizon before its date, far fewer than the final fit, and a learned model gains more
        from the difference than a rate does: measured against what happened later
        (benchmarks/after_the_fact.py), the refitted learned model was the better one where small
        folds had preferred a rate or the configured weights. One guard a ranking product needs: a
        learned model that ranks deals worse than the stage alone is not served (a better log
        loss can come from the base rate only), and the next most capable is the default then."""
        cands = self.candidates
        scores = {name: fit.weighted_log_loss(self.y, p, self.w) for name, (_, p) in self.calibrated.items()}
        floor_of = next((c.name for c in cands.values() if c.floor and c.name in self.predictions), None)
        floor = metrics(self.y, self.predictions[floor_of], self.w)["auc"] if floor_of else float("nan")
        ranks = {name: metrics(self.y, self.predictions[name], self.w)["auc"] for name in self.calibrated}  # before calibration, which moves folds apart
        eligible = [n for n in scores if cands[n].rank == RATES or (not ranks[n] < floor - 0.01 and self.tried(n))]
        supported = self.supported if self.supported is not None else list(scores)
        fallback = next(c.name for c in cands.values() if c.fallback)
        order = sorted((c for c in cands.values() if c.serves and c.labels == "target" and not c.prior), key=lambda c: -c.rank)  # the default's: most capable first
        default = next((c.name for c in order if c.name in eligible and c.name in supported), fallback)
        skipped = [c.name for c in order[: [c.name for c in order].index(default)] if c.name in supported]
        why = "the most capable model the labelled data support" + (f" that the backtest tried and that ranks deals no worse than the stage ({', '.join(skipped)}: not)" if skipped else "")
        twin = next((n for n in eligible if cands[n].twin_of(cands[default])), None)  # the same model learning from more, and fresher, rows where losses are recorded in time
        if twin is not None and scores[twin] < scores[default]:
            default, why = twin, f"{why}, learning from the outcomes as recorded (a lower backtest log loss than from wins within the horizon)"
        rank = cands[default].rank
        rivals = [n for n in eligible if n != default and (cands[n].rank > rank or rank == RATES)]  # a rate never displaces a learned model the data support
        better = [n for n in rivals if better_beyond_doubt(self.y, self.calibrated[n][1], self.calibrated[default][1], self.w, self.deal)]
        if not better:
            return default, f"{why}; no candidate did better beyond doubt in the backtest"
        best = min(better, key=lambda n: (scores[n], cands[n].simplicity))
        return best, f"better beyond doubt in the backtest than {default} ({why}): pooled log loss {scores[best]:.4f} against {scores[default]:.4f}"

    def served_predictions(self) -> np.ndarray:
        return self.calibrated[self.chosen][1]

    def pooled(self) -> dict[str, dict]:
        """Every candidate and baseline on the same rows: metrics and bootstrap intervals. The
        chosen one appears as "model" (cross-fitted calibration), the others as fitted."""
        shown = {"model": self.served_predictions(), **self.predictions}
        return {name: {**metrics(self.y, p, self.w), "interval_90": bootstrap(self.y, p, self.w, self.deal)} for name, p in shown.items()}

    def per_fold(self) -> list[dict]:
        out = []
        p = self.served_predictions()
        for k, at in enumerate(self.folds):
            m = self.fold == k
            got = metrics(self.y[m], p[m], self.w[m])
            out.append({"fold": str(at.date()), "deals": int(len(np.unique(self.deal[m & (self.w > 0)]))), **{k2: got[k2] for k2 in ("rows", "auc", "log_loss", "positive_rate")}})
        return out


def _submit_fold(pool: Executor, target: Target, snaps: Snapshots, candidates: list[Candidate], at: pd.Timestamp):
    """One fold's fits, handed to the pool: each candidate on the rows known at `at` (the
    fallback, fitted once, where a candidate lacks deals), each predicting the deals open then.
    Returns the evaluation rows, a future per candidate, and the candidates the fallback stood in for."""
    train = {"target": target.train(at).sample(LARGE_ROWS).rows(snaps.x)}
    if target.recorded is not None and any(c.labels == "recorded" for c in candidates):
        train["recorded"] = target.recorded(at).sample(LARGE_ROWS).rows(snaps.x)
    rows, y, w = target.evaluate(at)
    x_eval = snaps.x[rows]
    deals = {kind: r.deals_of_each_outcome() for kind, r in train.items()}

    def fitted(cand: Candidate, labels: str):
        model = cand.fit(train[labels], at)
        return model, fit.predict(model.model if isinstance(model, fit.FittedBooster) else model, x_eval)

    fell_back = [c.name for c in candidates if c.labels not in train or deals[c.labels] < c.min_deals]
    fallback = next(c for c in candidates if c.fallback)
    stand_in = pool.submit(fitted, fallback, "target") if fell_back else None
    futures = {c.name: stand_in if c.name in fell_back else pool.submit(fitted, c, c.labels) for c in candidates}  # in the candidates' order: a booster, then a linear model (whose design is the larger in memory), so two linear models rarely fit at once
    return (rows, y, w), futures, fell_back


def run(
    target: Target,
    snaps: Snapshots,
    spec: FeatureSpec,
    candidates: list[Candidate],
    progress: Callable[[str], None] | None = None,
) -> TargetBacktest | None:
    """Fit every candidate at every fold date, side by side on the machine's cores
    (`training.cores`); None when no date can be backtested."""
    with cores.side_by_side() as pool:
        return _run(target, snaps, spec, candidates, progress, pool)


def _run(target: Target, snaps: Snapshots, spec: FeatureSpec, candidates: list[Candidate], progress: Callable[[str], None] | None, pool: Executor) -> TargetBacktest | None:
    step = progress or (lambda _m: None)
    folds = fold_dates(target, snaps)
    if not folds:
        return None
    names = [c.name for c in candidates]
    candidates_by = {c.name: c for c in candidates}
    preds: dict[str, list[np.ndarray]] = {n: [] for n in names}
    stood_in: dict[str, list[int]] = {n: [] for n in names}
    fold_models: dict[str, list] = {n: [] for n in names}
    rows_all, fold_all, y_all, w_all = [], [], [], []
    rounds: dict[str, list[int]] = {n: [] for n in names}

    def collect(k: int, evaluated: tuple, fitted: dict[str, Future]) -> None:
        for name, future in fitted.items():
            model, p = future.result()
            if isinstance(model, fit.FittedBooster):
                rounds[name].append(model.rounds)
                model = model.model
            fold_models[name].append(model)
            preds[name].append(p)
        rows, y, w = evaluated
        rows_all.append(rows), fold_all.append(np.full(len(rows), k)), y_all.append(y), w_all.append(w)

    in_flight: deque = deque()  # folds whose fits are running: two at most, so two folds' rows are held, not every fold's
    for k, at in enumerate(folds):
        step(f"{target.name} backtest: fold {k + 1} of {len(folds)} ({at:%Y-%m-%d})")
        evaluated, fitted, fell_back = _submit_fold(pool, target, snaps, candidates, at)
        for name in fell_back:
            stood_in[name].append(k)
        in_flight.append((k, evaluated, fitted))
        if len(in_flight) > 1:
            collect(*in_flight.popleft())
    while in_flight:
        collect(*in_flight.popleft())
    rows = np.concatenate(rows_all)
    y, w, fold_of = np.concatenate(y_all), np.concatenate(w_all), np.concatenate(fold_all)
    pooled = {n: np.concatenate(p) for n, p in preds.items()}
    kinds = fit.calibrator_kinds(y[w > 0])
    mapped = {(c.name, kind): pool.submit(fit.cross_fitted, pooled[c.name], y, w, fold_of, kind) for c in candidates if c.serves for kind in kinds}
    options_of = {c.name: {kind: mapped[c.name, kind].result() for kind in kinds} for c in candidates if c.serves}
    deal_of = snaps.deal[rows]
    calibrated = {}
    for name, options in options_of.items():
        # a calibrator learned on the folds' models, which learned from less, is applied to the
        # refitted one: only where it helps beyond doubt (the rates and the linear model come
        # calibrated), and always to the models of recorded outcomes (another label's levels)
        if candidates_by[name].labels != "target" and len(options) > 1:  # learned from another label: its levels are that label's, and always need mapping
            kind = min((kd for kd in options if kd != "identity"), key=lambda kd: fit.weighted_log_loss(y, options[kd], w))
        else:
            better = [kd for kd in options if kd != "identity" and better_beyond_doubt(y, options[kd], options["identity"], w, deal_of)]
            kind = min(better, key=lambda kd: fit.weighted_log_loss(y, options[kd], w)) if better else "identity"
        calibrated[name] = (kind, options[kind])
    return TargetBacktest(target.name, folds, rows, fold_of, y, w, deal_of, pooled, calibrated, stood_in, rounds, fold_models, candidates=candidates_by)
