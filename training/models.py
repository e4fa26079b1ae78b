"""LightGBM boosters and their calibrators.

Early stopping watches the time-later validation slice; the calibrator is fitted on the slice
after that, which the booster never saw. Seeded and deterministic, so a retrain on the same
data gives the same model.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from scoring.bundle import Calibrator

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
    "num_threads": 2,
    "verbosity": -1,
}
MAX_ROUNDS = 1000
PATIENCE = 50
ISOTONIC_MIN_ROWS = 2000  # below this a sigmoid is the steadier calibrator


def fit_booster(
    train_x: pd.DataFrame, train_y: np.ndarray, train_w: np.ndarray, valid_x: pd.DataFrame, valid_y: np.ndarray, valid_w: np.ndarray, params: dict | None = None
) -> lgb.Booster:
    p = {**PARAMS, **(params or {})}
    train = lgb.Dataset(train_x, train_y, weight=train_w, categorical_feature="auto", free_raw_data=False)
    valid = lgb.Dataset(valid_x, valid_y, weight=valid_w, reference=train)
    return lgb.train(
        p,
        train,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(PATIENCE, verbose=False)],
    )


def _sigmoid(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
    clipped = np.clip(raw, 1e-6, 1 - 1e-6)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    lr = LogisticRegression(C=1e4).fit(logit, y, sample_weight=w)
    return Calibrator("sigmoid", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})


def _isotonic(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
    iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y, sample_weight=w)
    return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})


def fit_calibrator(raw: np.ndarray, y: np.ndarray, w: np.ndarray, check: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Calibrator:
    """Fit sigmoid and (on enough rows) isotonic maps on one slice with scikit-learn, and keep
    whichever of them or no map at all has the lowest log loss on `check`, rows neither the
    booster nor the calibrator saw. A booster is often calibrated already; a map that only
    adds noise is not kept."""
    raw = np.asarray(raw, dtype=float)
    if len(np.unique(y)) < 2:
        return Calibrator("identity", {})
    candidates = [Calibrator("identity", {}), _sigmoid(raw, y, w)]
    if len(y) >= ISOTONIC_MIN_ROWS and min((y == 1).sum(), (y == 0).sum()) >= 200:
        candidates.append(_isotonic(raw, y, w))
    if check is None or len(np.unique(check[1])) < 2:
        return candidates[-1]
    c_raw, c_y, c_w = check
    losses = [log_loss(c_y, np.clip(c(c_raw), 1e-6, 1 - 1e-6), sample_weight=c_w, labels=[0, 1]) for c in candidates]
    return candidates[int(np.argmin(losses))]
