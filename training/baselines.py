"""Single-number rules the stall model must beat: days in stage, days since the last activity,
each made a probability by isotonic regression on the rows it is fitted to. (The stage rate,
configured weights, naive Bayes and logistic regression are candidates of the backtest.)"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.naive_bayes import CategoricalNB

from features.frame import FeatureSpec
from training import fitting as fit


def rule(score_train: np.ndarray, y: np.ndarray, w: np.ndarray, increasing: bool = True):
    """A single-number rule made into a probability on the slice it is fitted to."""
    fill = np.nanmax(score_train) if np.isfinite(score_train).any() else 0.0
    iso = IsotonicRegression(out_of_bounds="clip", increasing=increasing).fit(np.nan_to_num(score_train, nan=fill), y, sample_weight=w)
    return lambda s: iso.predict(np.nan_to_num(s, nan=fill))


def naive_bayes(rows: fit.Rows, spec: FeatureSpec) -> Callable[[np.ndarray], np.ndarray]:
    """Odoo's predictive lead scoring: naive Bayes over the stage and the segment columns."""
    cols = [spec.columns.index(c) for c in spec.categorical]

    def enc(x: np.ndarray) -> np.ndarray:
        return (np.nan_to_num(x[:, cols], nan=-1.0) + 1).astype(np.int64)  # missing or unknown: its own category 0

    sizes = [len(spec.categories.get(spec.columns[c], [])) + 1 for c in cols]
    rows = rows.used()
    nb = CategoricalNB(alpha=1.0, min_categories=sizes).fit(enc(rows.x), rows.y, sample_weight=rows.w)
    if len(nb.classes_) < 2:
        return lambda x: np.full(len(x), float(nb.classes_[0]))
    return lambda x: nb.predict_proba(enc(x))[:, 1]
