"""Single-number rules the stall model must beat: days in stage, days since the last activity,
each made a probability by isotonic regression on the rows it is fitted to. (The stage rate,
configured weights, naive Bayes and logistic regression are candidates of the backtest.)"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression


def rule(score_train: np.ndarray, y: np.ndarray, w: np.ndarray, increasing: bool = True):
    """A single-number rule made into a probability on the slice it is fitted to."""
    fill = np.nanmax(score_train) if np.isfinite(score_train).any() else 0.0
    iso = IsotonicRegression(out_of_bounds="clip", increasing=increasing).fit(np.nan_to_num(score_train, nan=fill), y, sample_weight=w)
    return lambda s: iso.predict(np.nan_to_num(s, nan=fill))
