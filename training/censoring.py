"""Weights that undo the censoring of win labels.

A snapshot taken shortly before the labels were read is labelled only if its deal closed
fast, and fast deals are not typical ones. Each labelled snapshot is weighted by 1 / P(a deal
open at a snapshot that closes at all closes within the follow-up it had), estimated by
Kaplan–Meier over the training snapshots (scipy.stats.ecdf on censored data), divided by the
share that ever closes (deals left open for good flatten the curve below 1). Snapshots whose follow-up was so short
that fewer than MIN_CLOSE_PROB of deals would have closed are dropped rather than given large
weights: the weights correct for how long deals take in general, not for losers taking longer
than winners, so only mature labels are trusted for training, calibration and evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from features.frame import asof_join

MIN_CLOSE_PROB = 0.6


class CloseTimeModel:
    """P(closed within d days of a snapshot), fitted on snapshots with known follow-up."""

    def fit(self, as_of: pd.Series, close_at: pd.Series, known_at: pd.Timestamp) -> CloseTimeModel:
        closed = close_at.notna() & (close_at <= known_at)
        end = close_at.where(closed, known_at)
        days = ((end - as_of) / pd.Timedelta(days=1)).to_numpy(dtype=float)
        days = np.maximum(days, 1e-6)
        data = stats.CensoredData(uncensored=days[closed.to_numpy()], right=days[~closed.to_numpy()])
        self.cdf_ = stats.ecdf(data).cdf
        # the share that ever closes: real exports hold deals left open for good, and the curve
        # flattens below 1; what the weights need is how far along the deals that close are
        self.ever_ = float(self.cdf_.evaluate(days.max())) if closed.any() else 1.0
        return self

    def close_prob(self, days: np.ndarray) -> np.ndarray:
        """P(a deal that closes has closed within `days` of a snapshot)."""
        return self.cdf_.evaluate(np.maximum(days, 0.0)) / max(self.ever_, 1e-12)


def first_close(history: pd.DataFrame, closed_stages: list[str], points: pd.DataFrame) -> pd.Series:
    """For each point, the first time after as_of that its opportunity entered a closed stage."""
    rows = history[history["stage"].isin(closed_stages)][["opportunity_id", "entered_at"]]
    return asof_join(points, rows, "entered_at", [], direction="forward", exact=False)["entered_at"]


def win_weights(model: CloseTimeModel, as_of: pd.Series, known_at: pd.Timestamp, labelled: np.ndarray, min_prob: float = MIN_CLOSE_PROB) -> np.ndarray:
    """IPC weights for labelled snapshots; 0 for unlabelled or too-short follow-up."""
    follow = ((known_at - as_of) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    p = model.close_prob(follow)
    w = np.where(p >= min_prob, 1.0 / np.maximum(p, min_prob), 0.0)
    return np.where(labelled, w, 0.0)
