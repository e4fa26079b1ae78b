"""Held-out metrics, weighted (censoring weights) and comparable across models and baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

BINS = 10


def ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error over equal-count bins of the prediction."""
    if len(y) == 0:
        return float("nan")
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    total, err = w.sum(), 0.0
    for b in np.unique(which):
        m = which == b
        err += w[m].sum() / total * abs(np.average(y[m], weights=w[m]) - np.average(p[m], weights=w[m]))
    return float(err)


def lift_top_decile(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    if len(y) < 10:
        return float("nan")
    top = p >= np.quantile(p, 0.9)
    base = np.average(y, weights=w)
    return float(np.average(y[top], weights=w[top]) / base) if base > 0 else float("nan")


def metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> dict[str, float]:
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    keep = w > 0
    y, p, w = y[keep], p[keep], w[keep]
    two = len(np.unique(y)) == 2
    return {
        "auc": float(roc_auc_score(y, p, sample_weight=w)) if two else float("nan"),
        "log_loss": float(log_loss(y, p, sample_weight=w, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p, sample_weight=w)) if len(y) else float("nan"),
        "ece": ece(y, p, w),
        "lift_top_decile": lift_top_decile(y, p, w),
        "positive_rate": float(np.average(y, weights=w)) if len(y) else float("nan"),
        "rows": int(len(y)),
    }


def sliced(y: np.ndarray, p: np.ndarray, w: np.ndarray, by: pd.Series, min_rows: int = 30) -> pd.DataFrame:
    """The same metrics per value of `by` (a stage, a segment), where there are enough rows."""
    rows = []
    for value in by.dropna().unique():
        m = (by == value).to_numpy() & (w > 0)
        if m.sum() >= min_rows:
            rows.append({"slice": str(value), **metrics(y[m], p[m], w[m])})
    return pd.DataFrame(rows)
