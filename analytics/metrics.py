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


class _Resampled:
    """AUC and log loss of fixed predictions under changing row weights, in numpy: a bootstrap
    asks hundreds of times, and scikit-learn's input checks cost more than the arithmetic.
    Equal to `roc_auc_score` and `log_loss` with `sample_weight` (tests/models)."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        order = np.argsort(p, kind="mergesort")
        self.order, self.y, self.p = order, y[order], np.clip(p[order], 1e-6, 1 - 1e-6)
        distinct = np.r_[True, self.p[1:] != self.p[:-1]] if len(p) else np.zeros(0, dtype=bool)
        self.group = np.cumsum(distinct) - 1
        self.loss = -(self.y * np.log(self.p) + (1 - self.y) * np.log(1 - self.p))

    def auc(self, w: np.ndarray) -> float:
        w = w[self.order]
        pos = np.bincount(self.group, weights=w * self.y)
        neg = np.bincount(self.group, weights=w * (1 - self.y))
        below = np.cumsum(neg) - neg  # negatives scored strictly lower; ties count half
        denominator = pos.sum() * neg.sum()
        return float((pos * (below + 0.5 * neg)).sum() / denominator) if denominator > 0 else float("nan")

    def log_loss(self, w: np.ndarray) -> float:
        w = w[self.order]
        return float((w * self.loss).sum() / w.sum())


def bootstrap(y: np.ndarray, p: np.ndarray, w: np.ndarray, deal: np.ndarray, reps: int = 200, level: float = 0.90, seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals of AUC and log loss over resamples of deals (not rows: a deal's
    snapshots rise and fall together). Small samples get wide intervals, and they are shown."""
    keep = w > 0
    y, p, w, deal = np.asarray(y, dtype=float)[keep], np.asarray(p, dtype=float)[keep], np.asarray(w, dtype=float)[keep], np.asarray(deal, dtype=object)[keep]
    codes, uniques = pd.factorize(pd.Series(deal, dtype=object))
    if len(uniques) < 2 or len(np.unique(y)) < 2:
        return {}
    rng = np.random.default_rng(seed)
    fast = _Resampled(y, p)
    draws: dict[str, list[float]] = {"auc": [], "log_loss": []}
    for _ in range(reps):
        ww = w * np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))[codes]
        auc = fast.auc(ww)
        if auc == auc:
            draws["auc"].append(auc)
            draws["log_loss"].append(fast.log_loss(ww))
    a = (1 - level) / 2
    return {k: [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] for k, v in draws.items() if v}


def log_loss_gap(y: np.ndarray, p: np.ndarray, than: np.ndarray, w: np.ndarray, deal: np.ndarray, reps: int = 200, seed: int = 0) -> dict | None:
    """How much lower `p`'s log loss is than `than`'s on the same rows (negative: `p` is better),
    with the resampled gaps over deals (a deal's rows move together). Resampled one repetition
    at a time (Poisson weights per deal), so the rows of a large export are never repeated 200
    times in memory. None without a weighted row."""
    keep = w > 0
    if not keep.any():
        return None
    y, w, codes = y[keep], w[keep], pd.factorize(deal[keep])[0]
    loss = lambda q: -(y * np.log(np.clip(q, 1e-6, 1 - 1e-6)) + (1 - y) * np.log(np.clip(1 - q, 1e-6, 1 - 1e-6)))  # noqa: E731
    gap = np.bincount(codes, weights=w * (loss(p[keep]) - loss(than[keep])))
    mass = np.bincount(codes, weights=w)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(reps):
        k = rng.poisson(1.0, len(mass))
        if (k * mass).sum() > 0:
            draws.append((k * gap).sum() / (k * mass).sum())
    return {"gap": float(gap.sum() / mass.sum()), "draws": np.asarray(draws)}


def better_beyond_doubt(y: np.ndarray, p: np.ndarray, than: np.ndarray, w: np.ndarray, deal: np.ndarray, reps: int = 200, seed: int = 0) -> bool:
    """Whether `p`'s log loss is lower than `than`'s beyond doubt: the 90 % interval of their
    difference, over resamples of deals, lies below zero."""
    gap = log_loss_gap(y, p, than, w, deal, reps, seed)
    return gap is not None and below_zero(gap["draws"])


def below_zero(draws: np.ndarray) -> bool:
    """Whether resampled gaps lie below zero beyond doubt: the top of their 90 % interval does."""
    return len(draws) > 0 and float(np.quantile(draws, 0.95)) < 0
