"""The two labels of DESIGN.md, from what was known at a given time; unknown is NaN, never a guess.

Both are about a fixed horizon after the snapshot, so neither waits for a loss to be recorded
(real CRMs record losses weeks or months late, in bulk):
- won within H: the opportunity entered the won stage within H days after the snapshot (1), or
  H days passed without a win (0); a win after `known_at`, or a horizon that ends after it: no
  label. H is the org's own (`training.backtest.win_horizon`).
- stalled: in the H days after the snapshot it neither entered a later stage nor was won (1),
  or it did (0); a horizon that ends after `known_at`: no label.

These are the definitions, in pandas; the backtest computes the same on arrays
(`training.backtest.win_target`), and the tests hold the two together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frame import stage_state
from features.stages import StageOrder
from features.tables import Tables


def won_within_label(tables: Tables, stages: StageOrder, points: pd.DataFrame, horizon_days: int, known_at: pd.Timestamp) -> np.ndarray:
    horizon = pd.Timedelta(days=horizon_days)
    hist = tables.stage_history
    wins = hist.loc[(hist["stage"] == stages.config.won) & (hist["entered_at"] <= known_at), ["opportunity_id", "entered_at"]]
    pts = pd.DataFrame({"_row": np.arange(len(points)), "opportunity_id": points["opportunity_id"].to_numpy(dtype=object), "as_of": points["as_of"].reset_index(drop=True)})
    pairs = pts.merge(wins, on="opportunity_id", how="inner")
    hit = (pairs["entered_at"] > pairs["as_of"]) & (pairs["entered_at"] <= pairs["as_of"] + horizon)
    won = np.zeros(len(points), dtype=bool)
    won[pairs.loc[hit, "_row"].to_numpy()] = True
    complete = (pts["as_of"] + horizon <= known_at).to_numpy()
    return np.where(won, 1.0, np.where(complete, 0.0, np.nan))


def stalled_label(tables: Tables, stages: StageOrder, points: pd.DataFrame, horizon_days: int, known_at: pd.Timestamp) -> np.ndarray:
    horizon = pd.Timedelta(days=horizon_days)
    state = stage_state(tables, stages, points)
    pts = pd.DataFrame(
        {
            "_row": np.arange(len(points)),
            "opportunity_id": points["opportunity_id"].to_numpy(dtype=object),
            "as_of": points["as_of"].reset_index(drop=True),
            "index_now": state["index_now"].to_numpy(),
        }
    )
    hist = tables.stage_history[["opportunity_id", "entered_at"]].assign(idx=stages.index(tables.stage_history["stage"]))
    pairs = pts.merge(hist, on="opportunity_id", how="inner")
    in_window = (pairs["entered_at"] > pairs["as_of"]) & (pairs["entered_at"] <= pairs["as_of"] + horizon)
    forward = in_window & (pairs["idx"] > pairs["index_now"])  # a later open stage, or won (index k)
    progressed = np.zeros(len(points), dtype=bool)
    progressed[pairs.loc[forward, "_row"].to_numpy()] = True
    stalled = np.where(progressed, 0.0, 1.0)
    complete = (pts["as_of"] + horizon <= known_at).to_numpy()
    return np.where(complete, stalled, np.nan)
