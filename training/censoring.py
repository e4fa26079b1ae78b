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

from features.times import DAY_NS

MIN_CLOSE_PROB = 0.6


class CloseTimeModel:
    """P(closed within d days of a snapshot), fitted on snapshots with known follow-up."""

    def fit(self, as_of: np.ndarray, close_at: np.ndarray, known_at: pd.Timestamp) -> CloseTimeModel:
        """`as_of`, `close_at`: ns (close_at NO_CLOSE or any time after `known_at`: not closed then)."""
        closed = close_at <= known_at.value
        days = np.maximum((np.where(closed, close_at, known_at.value) - as_of) / DAY_NS, 1e-6)
        data = stats.CensoredData(uncensored=days[closed], right=days[~closed])
        self.cdf_ = stats.ecdf(data).cdf
        # the share that ever closes: real exports hold deals left open for good, and the curve
        # flattens below 1; what the weights need is how far along the deals that close are
        self.ever_ = float(self.cdf_.evaluate(days.max())) if closed.any() else 1.0
        return self

    def close_prob(self, days: np.ndarray) -> np.ndarray:
        """P(a deal that closes has closed within `days` of a snapshot)."""
        return self.cdf_.evaluate(np.maximum(days, 0.0)) / max(self.ever_, 1e-12)


def win_weights(model: CloseTimeModel, as_of: np.ndarray, known_at: pd.Timestamp, min_prob: float = MIN_CLOSE_PROB) -> np.ndarray:
    """IPC weights of snapshots taken at `as_of` (ns) whose outcome is known at `known_at`; 0 where
    their follow-up was too short."""
    p = model.close_prob((known_at.value - as_of) / DAY_NS)
    return np.where(p >= min_prob, 1.0 / np.maximum(p, min_prob), 0.0)
