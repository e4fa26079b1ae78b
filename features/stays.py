"""A deal's stays in its stages and its final state, written once.

Snapshots, labels, the point-in-time statistics, the funnel, the stage weights and the
forecast all ask the same two questions of the stage history: "what did each stay look like"
and "where did each deal end up". They read the answers here, so a rule such as "a re-opened
deal is open again" lives in one place.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from features.stages import StageOrder

DAY = pd.Timedelta(days=1)
CHUNK_ROWS = 1_000_000  # stage-history rows read at a time by what reduces every deal's stays


def by_deals(history: pd.DataFrame, rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The history in consecutive pieces of about `rows` rows, a deal never split (sorted by
    opportunity, as `Tables` keeps it). Whatever is computed per deal from its stays is the
    same piece by piece, and the stays of every deal (ten columns a row, more than the history
    itself) are never all in memory at once."""
    rows = rows or CHUNK_ROWS
    if len(history) <= rows:
        yield history
        return
    ids = history["opportunity_id"].to_numpy()
    start = 0
    while start < len(ids):
        cut = min(start + rows, len(ids))
        while cut < len(ids) and ids[cut] == ids[cut - 1]:
            cut += 1
        yield history.iloc[start:cut]
        start = cut


def stays(history: pd.DataFrame, stages: StageOrder, until: pd.Timestamp) -> pd.DataFrame:
    """One row per stage-history row (sorted by opportunity, then time, as `Tables` keeps it):
    the stay that began there, when it ended (NaT while the deal is still in it), its days (to
    `until` while it lasts), the next stage's index and whether it moved forward."""
    idx = stages.index(history["stage"])
    same_next = history["opportunity_id"].eq(history["opportunity_id"].shift(-1)).to_numpy()
    next_idx = np.where(same_next, np.roll(idx, -1), np.nan)
    ended = history["entered_at"].shift(-1).where(same_next)
    return pd.DataFrame(
        {
            "opportunity_id": history["opportunity_id"],
            "stage": history["stage"],
            "index": idx,
            "entered_at": history["entered_at"],
            "ended_at": ended,
            "days": ((ended.fillna(until) - history["entered_at"]) / DAY).to_numpy(),
            "next_index": next_idx,
            "advanced": next_idx > idx,
            "done": same_next,
            "open_stage": stages.is_open(idx),
        }
    )


def final_states(history: pd.DataFrame, stages: StageOrder) -> pd.DataFrame:
    """Per opportunity (the index), its last stage, that stage's index, when it was entered and
    its state: 'open', 'won' or 'lost'. History sorted as `Tables` keeps it."""
    last = history.groupby("opportunity_id", sort=False).tail(1).set_index("opportunity_id")[["stage", "entered_at"]]
    index = stages.index(last["stage"])
    return last.assign(index=index, state=stages.state(index))
