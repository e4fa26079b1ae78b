"""Fitting the candidates a backtest compares, and their calibrators.

Every candidate reads the model matrix (`features.frame.model_matrix`) and returns one of the
estimators a bundle can serve (`scoring.models`): a LightGBM booster, a regularised logistic
regression, or partially pooled stage × segment rates. Each needs a minimum of closed deals of
both outcomes; below it, the rates (which need none beyond a prior) stand in for it. Seeded and
deterministic, so a retrain on the same data gives the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from features.frame import FeatureSpec
from scoring.calibrators import Calibrator, Identity, Isotonic, Sigmoid
from scoring.models import EPS, BoosterModel, LinearModel, RateModel

PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 24,
    "max_depth": 5,  # shallow trees: reasons (TreeSHAP, cost ~ depth²) twice as fast, no loss measured
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 20,
    "max_cat_to_onehot": 8,
    "seed": 17,
    "deterministic": True,
    "force_row_wise": True,
    # threads: OpenMP's default (OMP_NUM_THREADS, else one per core). A fixed count oversubscribes
    # the cores when several processes train at once, and LightGBM's threads spin while they wait
    "verbosity": -1,
}
MAX_ROUNDS = 1000
PATIENCE = 50
ISOTONIC_MIN_ROWS = 2000  # below this a sigmoid is the steadier calibrator
LOGISTIC_C = 0.3  # on standardised features and one-hot levels
POOLING = 10.0  # deals' worth of prior in the pooled rates
MIN_DEALS = {"lightgbm": 40, "linear": 10}  # closed deals of each outcome a learned candidate needs (Dynamics 365 asks 40 + 40)


@dataclass(frozen=True)
class Rows:
    """Labelled rows to fit on: the model matrix, labels, weights (0: unused) and each row's deal."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    deal: np.ndarray

    def used(self) -> Rows:
        keep = self.w > 0
        if keep.all():
            return self  # no copy of the matrix
        return Rows(self.x[keep], self.y[keep], self.w[keep], self.deal[keep])

    def deals_of_each_outcome(self) -> int:
        """Distinct deals with a positive and with a negative row, the smaller count: one long
        deal gives many correlated rows, so deals are what count."""
        keep = self.w > 0
        return min(len(np.unique(self.deal[keep & (self.y == 1)])), len(np.unique(self.deal[keep & (self.y == 0)])))


def predict(model, x: np.ndarray) -> np.ndarray:
    """The probabilities of an estimator (`scoring.models`) or of a baseline's predict function."""
    return model.probability(x) if hasattr(model, "probability") else model(x)


DEFAULT_ROUNDS = 100  # when there is no backtest to take the number from


def booster_params(n_rows: int) -> dict:
    """Leaves of at least 40 rows on large data, fewer on small (never below 5)."""
    return {**PARAMS, "min_data_in_leaf": int(np.clip(n_rows // 60, 5, PARAMS["min_data_in_leaf"]))}


@dataclass(frozen=True)
class FittedBooster:
    """A booster and the rounds it was fitted with (early stopping chose them, or the caller)."""

    model: BoosterModel
    rounds: int


def _inner_valid(deal: np.ndarray) -> np.ndarray:
    """A quarter of the deals, by a stable hash of their id, watch early stopping."""
    return pd.util.hash_pandas_object(pd.Series(deal, dtype=object).astype(str), index=False).to_numpy() % 4 == 0


def fit_booster(rows: Rows, spec: FeatureSpec, rounds: int | None = None, refit: bool = True) -> FittedBooster:
    """A booster on the model matrix; `rounds` None: as many as early stopping on a quarter of the
    deals allows, else exactly that many. With early stopping and not `refit`, the booster that
    chose the rounds (three quarters of the deals, at its best round) is the one returned:
    what a backtest fold does, where a refit on every row costs as much again (about half of
    a training run's time) for predictions that only judge the candidate; the served booster
    is fitted on every row with the folds' median rounds (`training.pipeline`)."""
    rows = rows.used()
    categorical = [spec.columns.index(c) for c in spec.categorical]
    params = booster_params(len(rows.y))

    def dataset(mask: np.ndarray) -> lgb.Dataset:
        return lgb.Dataset(rows.x[mask], rows.y[mask], weight=rows.w[mask], categorical_feature=categorical, free_raw_data=False)

    every = np.ones(len(rows.y), dtype=bool)
    if rounds is None:
        valid = _inner_valid(rows.deal)
        if valid.all() or not valid.any() or len(np.unique(rows.y[valid])) < 2:
            rounds = DEFAULT_ROUNDS
        else:
            train = dataset(~valid)
            probe = lgb.train(params, train, num_boost_round=MAX_ROUNDS, valid_sets=[dataset(valid)], callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
            rounds = max(int(probe.best_iteration), 10)
            if not refit:
                return FittedBooster(BoosterModel(probe), rounds)
    booster = lgb.train(params, dataset(every), num_boost_round=rounds)
    return FittedBooster(BoosterModel(booster), rounds)


def fit_linear(rows: Rows, spec: FeatureSpec, c: float = LOGISTIC_C) -> LinearModel:
    """L2-regularised logistic regression (scikit-learn) on a design built here, so that the
    stored numbers reproduce its probabilities exactly (`scoring.models.LinearModel`).

    The design is written once, into one array of only the columns that vary (a constant one,
    such as an indicator of a never-missing number or an absent level, carries nothing: weight
    0): a backtest fits this on 150,000 rows, and stacking blocks, then dropping columns, held
    three copies of the design at once beside Newton-Cholesky's own weighted copy."""
    rows = rows.used()
    x, n = rows.x, len(rows.y)
    numeric = [j for j, col in enumerate(spec.columns) if col not in spec.categorical]
    categorical = [j for j, col in enumerate(spec.columns) if col in spec.categorical]
    levels = [len(spec.categories.get(spec.columns[j], [])) for j in categorical]
    median, mean, scale, missing_mean, level_mean = [], [], [], [], []
    standardised, indicators, onehot = [], [], []  # per design column: how to compute it, None when constant
    for j in numeric:
        values = x[:, j].astype(np.float64)  # the matrix is float32; the stored numbers are not
        missing = np.isnan(values)
        med = float(np.nanmedian(values)) if (~missing).any() else 0.0
        filled = np.where(missing, med, values)
        m, s = float(filled.mean()), float(filled.std())
        median.append(med), mean.append(m), scale.append(s if s > 0 else 1.0), missing_mean.append(float(missing.mean()))
        standardised.append(_standardised(x, j, med, m, scale[-1]) if filled.min() != filled.max() else None)
        indicators.append((lambda j=j: np.isnan(x[:, j])) if 0 < missing.sum() < n else None)
    for j, n_levels in zip(categorical, levels, strict=True):
        codes = x[:, j]
        known = ~np.isnan(codes) & (codes >= 0) & (codes < n_levels)
        counts = np.bincount(codes[known].astype(np.int64), minlength=n_levels)
        level_mean.append((counts / n).tolist())
        onehot += [(lambda j=j, level=level: x[:, j] == level) if 0 < count < n else None for level, count in enumerate(counts)]
    columns = [*standardised, *indicators, *onehot]
    varies = np.array([col is not None for col in columns], dtype=bool)
    design = np.empty((n, int(varies.sum())))
    for k, col in enumerate(col for col in columns if col is not None):
        design[:, k] = col()
    # Newton-Cholesky suits a few hundred columns and many rows
    model = LogisticRegression(C=c, solver="newton-cholesky", max_iter=200).fit(design, rows.y, sample_weight=rows.w)
    coef = np.zeros(len(columns))
    coef[varies] = model.coef_[0]
    k = len(numeric)
    weight, missing_weight = coef[:k].tolist(), coef[k : 2 * k].tolist()
    level_weight, at = [], 2 * k
    for n_levels in levels:
        level_weight.append(coef[at : at + n_levels].tolist())
        at += n_levels
    return LinearModel(numeric, median, mean, scale, missing_weight, missing_mean, weight, categorical, level_weight, level_mean, float(model.intercept_[0]))


def _standardised(x: np.ndarray, j: int, median: float, mean: float, scale: float):
    """Column j with missing values at the median, standardised (what LinearModel computes)."""
    return lambda: (np.where(np.isnan(x[:, j]), median, x[:, j].astype(np.float64)) - mean) / scale


def _pooled(y: np.ndarray, w: np.ndarray, deal: np.ndarray, groups: np.ndarray, n_groups: int, prior: np.ndarray) -> np.ndarray:
    """Per group: the weighted rate, shrunk toward `prior` with POOLING deals' worth of weight
    (a group's evidence counts its distinct deals, not its snapshots)."""
    out = np.array(prior, dtype=float, copy=True)
    frame = pd.DataFrame({"g": groups, "yw": y * w, "w": w, "deal": deal})
    frame = frame[frame["g"] >= 0]
    if frame.empty:
        return out
    agg = frame.groupby("g").agg(yw=("yw", "sum"), w=("w", "sum"), deals=("deal", "nunique"))
    g = agg.index.to_numpy(dtype=np.int64)
    raw = agg["yw"].to_numpy() / np.maximum(agg["w"].to_numpy(), 1e-12)
    n = agg["deals"].to_numpy(dtype=float)
    out[g] = (n * raw + POOLING * prior[g]) / (n + POOLING)
    return out


def fit_rates(rows: Rows, spec: FeatureSpec, stage_prior: np.ndarray | None = None, segments: bool = True, dwell: bool = True) -> RateModel:
    """Partially pooled rates: each stage's rate shrunk toward its prior (the configured weight,
    else the rate every closed deal earned there, else the overall rate), each segment value's
    rate at that stage shrunk toward the stage's, and (`dwell`) each band of days in the stage
    likewise. `segments=False, dwell=False`: the plain stage rate."""
    rows = rows.used()
    stage_col = spec.columns.index("stage")
    n_stages = len(spec.categories.get("stage", []))
    overall = float(np.clip(np.average(rows.y, weights=rows.w), 0.01, 0.99)) if rows.w.sum() > 0 else (
        float(np.nanmean(stage_prior)) if stage_prior is not None and np.isfinite(stage_prior).any() else 0.5
    )
    prior = np.full(n_stages, overall) if stage_prior is None else np.where(np.isfinite(stage_prior), stage_prior, overall)
    stage = np.where(np.isnan(rows.x[:, stage_col]), -1, rows.x[:, stage_col]).astype(np.int64) if len(rows.y) else np.zeros(0, dtype=np.int64)
    rates = np.clip(_pooled(rows.y, rows.w, rows.deal, stage, n_stages, prior), EPS, 1 - EPS)
    shifts = {}
    for col in spec.segment_columns if segments else []:
        j = spec.columns.index(col)
        n_levels = len(spec.categories.get(col, []))
        if n_levels == 0:
            continue
        level = np.where(np.isnan(rows.x[:, j]), -1, rows.x[:, j]).astype(np.int64)
        pair = np.where((stage >= 0) & (level >= 0), stage * n_levels + level, -1)
        pooled = _pooled(rows.y, rows.w, rows.deal, pair, n_stages * n_levels, np.repeat(rates, n_levels))
        shift = logit(np.clip(pooled, EPS, 1 - EPS)) - logit(np.repeat(rates, n_levels))
        shifts[j] = shift.reshape(n_stages, n_levels).tolist()
    bands = _dwell_bands(rows, spec, stage, rates, n_stages) if dwell and segments and "days_in_stage" in spec.columns and len(rows.y) else None
    return RateModel(stage_col, rates.tolist(), overall, shifts, dwell=bands)


DWELL_BANDS = 4  # bands of days in stage, at the labelled rows' quantiles (a sales cycle's own scale, not days fixed for every CRM)


def _dwell_bands(rows: Rows, spec: FeatureSpec, stage: np.ndarray, rates: np.ndarray, n_stages: int) -> dict | None:
    """Each stage's rate by band of days in the stage, shrunk toward the stage's, as log-odds
    shifts; None when the days do not split into bands."""
    j = spec.columns.index("days_in_stage")
    days = rows.x[:, j]
    seen = ~np.isnan(days)
    edges = np.unique(np.quantile(days[seen], np.linspace(0, 1, DWELL_BANDS + 1)[1:-1])) if seen.any() else np.array([])
    if not len(edges):
        return None
    n_bands = len(edges) + 1
    band = np.searchsorted(edges, np.nan_to_num(days, nan=0.0), side="right")
    pair = np.where((stage >= 0) & seen, stage * n_bands + band, -1)
    pooled = _pooled(rows.y, rows.w, rows.deal, pair, n_stages * n_bands, np.repeat(rates, n_bands))
    shift = logit(np.clip(pooled, EPS, 1 - EPS)) - logit(np.repeat(rates, n_bands))
    return {"column": j, "edges": edges.tolist(), "shifts": shift.reshape(n_stages, n_bands).tolist()}


def _sigmoid(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
    """Platt's sigmoid on the logit, its slope held toward 1 as firmly as PRIOR_DEALS deals of
    the rarer outcome would hold it (the information a slope gets from rare outcomes grows with
    their number times the spread of the logits); the intercept, the level, is the rows' own. On
    thousands of outcomes that is Platt's fit; on the few positives of a young org's folds an
    unpenalised slope of 3.6 turned stage rates of 0.08-0.30 into 0.0001-0.03 (issue 40)."""
    keep = w > 0
    z = logit(np.clip(raw[keep], 1e-6, 1 - 1e-6))
    y, w = y[keep].astype(float), w[keep].astype(float)
    hold = PRIOR_DEALS * float(np.average((z - np.average(z, weights=w)) ** 2, weights=w)) if len(z) else 0.0

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        q = expit(ab[0] * z + ab[1])
        value = -float(np.sum(w * (y * np.log(np.clip(q, 1e-300, 1)) + (1 - y) * np.log(np.clip(1 - q, 1e-300, 1)))))
        resid = (q - y) * w
        return value + hold * (ab[0] - 1) ** 2, np.array([float(np.sum(resid * z)) + 2 * hold * (ab[0] - 1), float(np.sum(resid))])

    start = np.array([1.0, float(logit(np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6)) - np.average(z, weights=w))]) if len(z) else np.array([1.0, 0.0])
    found = minimize(loss, start, jac=True, method="L-BFGS-B")
    return Sigmoid(a=float(found.x[0]), b=float(found.x[1]))


PRIOR_DEALS = 20.0  # how hard the sigmoid calibrator and the level are held near the identity when outcomes are few


def level_shift(p: np.ndarray, y: np.ndarray, w: np.ndarray, reach: np.ndarray | None = None, prior: float = PRIOR_DEALS) -> tuple[float, dict]:
    """The shift of the logit that makes the probabilities' expected count of outcomes equal the
    count observed (calibration in the large), shrunk toward no shift by `prior` deals of the
    rarer outcome: the level the most recent rows say, as far as their outcomes can say it.
    `reach`: per row, the share of its chance that its follow-up so far could show (1: followed
    the whole horizon), so rows too new to have shown a loss still count for what they show.
    With what it was measured on."""
    keep = w > 0
    reach = np.ones(len(p)) if reach is None else np.asarray(reach, dtype=float)
    p, y, w, reach = np.clip(p[keep], 1e-6, 1 - 1e-6), y[keep].astype(float), w[keep].astype(float), reach[keep]
    exposure = w * reach
    seen, room = float((w * y).sum()), float(exposure.sum())
    if not len(p) or seen <= 0 or seen >= room:
        return 0.0, {"rows": int(len(p)), "why": "no outcome of both kinds in the window: no shift"}
    observed = seen / room
    z = logit(p)
    low, high = -10.0, 10.0
    for _ in range(60):  # the expected count is monotone in the shift: bisection
        mid = (low + high) / 2
        low, high = (mid, high) if np.average(expit(z + mid), weights=exposure) < observed else (low, mid)
    rarer = min(seen, room - seen)
    shift = (low + high) / 2 * rarer / (rarer + prior)
    return float(shift), {"rows": int(len(p)), "observed": observed, "predicted": float(np.average(p, weights=exposure)), "rarer_outcome": rarer,
                          "followed_share": round(room / float(w.sum()), 4), "full_shift": float((low + high) / 2), "shift": float(shift),
                          "predicted_after": float(np.average(expit(z + shift), weights=exposure))}


def _isotonic(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
    iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y, sample_weight=w)
    return Isotonic(x=tuple(iso.X_thresholds_.tolist()), y=tuple(iso.y_thresholds_.tolist()))


CALIBRATORS = {"identity": lambda raw, y, w: Identity(), "sigmoid": _sigmoid, "isotonic": _isotonic}


def calibrator_kinds(y: np.ndarray) -> list[str]:
    """Which maps enough rows support: isotonic only on thousands of rows with hundreds of each class."""
    kinds = ["identity", "sigmoid"] if len(np.unique(y)) == 2 else ["identity"]
    if len(y) >= ISOTONIC_MIN_ROWS and min((y == 1).sum(), (y == 0).sum()) >= 200:
        kinds.append("isotonic")
    return kinds


def cross_fitted(raw: np.ndarray, y: np.ndarray, w: np.ndarray, fold: np.ndarray, kind: str) -> np.ndarray:
    """Each fold's predictions mapped by a calibrator fitted on the other folds' (leave one fold
    out), so a calibrator is never judged on the rows it was fitted to."""
    out = raw.copy()
    if kind == "identity":
        return out
    for f in np.unique(fold):
        this, rest = fold == f, (fold != f) & (w > 0)
        if len(np.unique(y[rest])) == 2:
            out[this] = CALIBRATORS[kind](raw[rest], y[rest], w[rest])(raw[this])
    return out


def weighted_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    keep = w > 0
    return float(log_loss(y[keep], np.clip(p[keep], 1e-6, 1 - 1e-6), sample_weight=w[keep], labels=[0, 1])) if keep.any() else float("nan")

