"""Which deals a stall alert flags: one meaning, set from the stall model's own calibration.

A fixed cut (a stall risk of 0.6 or more) flagged 43 % of the demo's open deals: an alert that
fires for nearly half the pipeline is a column, not an alert. The stall risk is calibrated (the
backtest checks it), so the share of a set of flagged deals that really make no progress within
the stall horizon is expected to be their mean stall risk. The alert flags the riskiest deals for
as long as that expected share stays at or above `[stall] alert_precision`, and never more than
`[stall] alert_max_share` of the open deals: a manager who works the list finds that many of them
really stuck, and a list short enough to work, whatever the level of this pipeline's risks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StallAlert:
    flagged: np.ndarray  # bool per deal
    threshold: float | None  # the lowest stall risk flagged (None: none flagged)
    expected_precision: float | None  # the flagged deals' mean stall risk: the share expected to stall


def stall_alert(risk: np.ndarray, precision: float, max_share: float = 1.0) -> StallAlert:
    """The largest set of the riskiest deals whose mean stall risk is at least `precision`, of
    at most `max_share` of the deals whose risk is known (at least one, when one holds it).
    A risk that is not known (NaN) is never flagged."""
    risk = np.asarray(risk, dtype=float)
    known = np.flatnonzero(~np.isnan(risk))
    order = known[np.argsort(-risk[known], kind="stable")]
    flagged = np.zeros(len(risk), dtype=bool)
    if not len(order):
        return StallAlert(flagged, None, None)
    running = np.cumsum(risk[order]) / np.arange(1, len(order) + 1)
    holds = np.flatnonzero(running >= precision)
    if not len(holds):
        return StallAlert(flagged, None, None)
    k = int(holds[-1]) + 1  # the running mean falls as riskier deals run out: the last k where it holds
    k = max(1, min(k, int(np.floor(max_share * len(order)))))
    threshold = float(risk[order[k - 1]])
    flagged[order[:k]] = True  # ties at the threshold beyond the k: not flagged (the list stays within its share)
    return StallAlert(flagged, threshold, float(risk[flagged].mean()))
