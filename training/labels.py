"""The two labels of DESIGN.md, from what was known at a given time; unknown is NaN, never a guess.

- won: the opportunity's outcome as known at `known_at` is the won stage (1) or the lost stage
  (0); still open at `known_at`: no label.
- stalled: in the H days after the snapshot it neither entered a later stage nor was won (1),
  or it did (0); a horizon that ends after `known_at`: no label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frame import stage_state
from features.stages import StageOrder
from features.stays import final_states
from features.tables import Tables


def won_label(tables: Tables, stages: StageOrder, points: pd.DataFrame, known_at: pd.Timestamp) -> np.ndarray:
    known = tables.stage_history[tables.stage_history["entered_at"] <= known_at]
    outcome = points["opportunity_id"].map(final_states(known, stages)["state"])
    won = np.where(outcome == "won", 1.0, np.where(outcome == "lost", 0.0, np.nan))
    return np.where((points["as_of"] <= known_at).to_numpy(), won, np.nan)


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
