"""Training snapshots: each opportunity observed at regular times while it is open.

The grid is one calendar for all opportunities (every `every_days` from a fixed Monday), so a
backtest's fold date cuts every opportunity at the same dates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frame import stage_state
from features.stages import StageOrder
from features.stays import final_states
from features.tables import Tables

ANCHOR = pd.Timestamp("2000-01-03T00:00:00Z")  # a Monday


def snapshot_points(tables: Tables, stages: StageOrder, every_days: int = 7, until: pd.Timestamp | None = None) -> pd.DataFrame:
    """(opportunity_id, as_of) for every grid time at which the opportunity was open."""
    until = until if until is not None else tables.end
    step = pd.Timedelta(days=every_days).value
    opps = tables.opportunities[["opportunity_id", "created_at"]].drop_duplicates("opportunity_id")
    final_state = final_states(tables.stage_history, stages)
    ids = opps["opportunity_id"].to_numpy()
    # reindexed, not mapped: pandas maps through an empty datetime Series by casting it to floats, which fails
    final = final_state["entered_at"].reindex(ids).set_axis(opps.index)
    still_open = final_state["state"].reindex(ids).set_axis(opps.index).eq("open")
    end = final.where(~still_open, until).clip(upper=until)
    start_ns = (opps["created_at"] - ANCHOR).to_numpy().astype("timedelta64[ns]").astype(np.int64)
    end_ns = (end - ANCHOR).to_numpy().astype("timedelta64[ns]").astype(np.int64)
    first_k = -(-start_ns // step)
    last_k = end_ns // step
    n = np.maximum(last_k - first_k + 1, 0)
    which = np.repeat(np.arange(len(opps)), n)
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    k = first_k[which] + offset
    points = pd.DataFrame(
        {
            "opportunity_id": opps["opportunity_id"].to_numpy()[which],
            "as_of": ANCHOR + pd.to_timedelta(k * step, unit="ns"),
        }
    )
    state = stage_state(tables, stages, points)
    return points[state["is_open"].to_numpy()].reset_index(drop=True)
