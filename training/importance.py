"""Which feature families carry signal: permutation importance on the backtest's own folds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from features.frame import FeatureSpec
from training import fitting as fit
from training.labelled_snapshots import Snapshots

if TYPE_CHECKING:
    from training.backtest import TargetBacktest


def family_signal(bt: TargetBacktest, snaps: Snapshots, spec: FeatureSpec, families: dict[str, list[str]], seed: int = 0) -> dict[str, float]:
    """How much the chosen model's pooled log loss rises when one feature family is shuffled
    across the deals of each fold (permutation importance): > 0 means the family carries signal."""
    chosen = bt.chosen
    models = bt.fold_models.get(chosen, [])
    if not models:
        return {}
    rng = np.random.default_rng(seed)
    # the evaluation rows read once: on a cluster every read of scattered rows visits every
    # partition's (often spilled) block, and this read them once per fold and family
    x_all = snaps.x[bt.rows]
    if np.all(bt.fold[1:] >= bt.fold[:-1]):  # folds pooled in order (run): each fold's rows a view, not a copy
        bounds = np.searchsorted(bt.fold, np.arange(len(models) + 1))
        x_of = [x_all[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    else:
        x_of = [x_all[bt.fold == k] for k in range(len(models))]
    base = np.concatenate([fit.predict(m, x) for m, x in zip(models, x_of, strict=True)])
    base_loss = fit.weighted_log_loss(bt.y, base, bt.w)
    out = {}
    for family, cols in families.items():
        idx = [spec.columns.index(c) for c in cols if c in spec.columns]
        if not idx:
            continue
        shuffled = []
        for m, x in zip(models, x_of, strict=True):
            x = x.copy()
            perm = rng.permutation(len(x))
            x[:, idx] = x[np.ix_(perm, idx)]  # only the family's columns are read shuffled
            shuffled.append(fit.predict(m, x))
        out[family] = round(fit.weighted_log_loss(bt.y, np.concatenate(shuffled), bt.w) - base_loss, 4)
    return out
