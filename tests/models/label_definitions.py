"""The win label's definition in pandas, row by row: what `training.labels.win_target`
computes on arrays is held to it."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
