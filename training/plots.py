"""The plots a data scientist reads after a run: calibration, lift/gain, feature importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analytics.metrics import BINS


def _binned(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.unique(np.quantile(p, np.linspace(0, 1, BINS + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    xs, ys = [], []
    for b in np.unique(which):
        m = which == b
        xs.append(np.average(p[m], weights=w[m]))
        ys.append(np.average(y[m], weights=w[m]))
    return np.array(xs), np.array(ys)


def calibration(target: str, y: np.ndarray, preds: dict[str, np.ndarray], w: np.ndarray, out: Path) -> Path:
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    keep = w > 0
    for name, p in preds.items():
        x, yy = _binned(y[keep], p[keep], w[keep])
        ax.plot(x, yy, marker="o", label=name)
    ax.set(xlabel="predicted probability", ylabel="observed rate", title=f"{target}: calibration in the rolling backtest", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def gain(target: str, y: np.ndarray, preds: dict[str, np.ndarray], w: np.ndarray, out: Path) -> Path:
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    keep = w > 0
    total = (y[keep] * w[keep]).sum()
    for name, p in preds.items():
        order = np.argsort(-p[keep], kind="stable")
        share = np.cumsum(w[keep][order]) / w[keep].sum()
        found = np.cumsum((y[keep] * w[keep])[order]) / total
        ax.plot(share, found, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set(xlabel="share of snapshots, highest score first", ylabel=f"share of all {'wins' if target == 'win' else 'stalls'} found", title=f"{target}: cumulative gain")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def importance(target: str, names: list[str], gains: np.ndarray, out: Path, top: int = 20) -> Path:
    order = np.argsort(gains)[::-1][:top][::-1]
    fig = Figure(figsize=(6, 0.3 * len(order) + 1.2))
    ax = fig.subplots()
    ax.barh([names[i] for i in order], gains[order] / max(gains.sum(), 1e-12))
    ax.set(xlabel="share of total gain", title=f"{target}: feature importance")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
