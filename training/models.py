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

from features.bundle import Calibrator

PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
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


def fit_calibrator(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibrator:
    """Isotonic when the slice is large, a sigmoid on the logit otherwise (scikit-learn both)."""
    raw = np.asarray(raw, dtype=float)
    if len(np.unique(y)) < 2:
        return Calibrator("identity", {})
    minority = min((y == 1).sum(), (y == 0).sum())
    if len(y) >= ISOTONIC_MIN_ROWS and minority >= 200:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y, sample_weight=w)
        return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    clipped = np.clip(raw, 1e-6, 1 - 1e-6)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    lr = LogisticRegression(C=1e4).fit(logit, y, sample_weight=w)
    return Calibrator("sigmoid", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
