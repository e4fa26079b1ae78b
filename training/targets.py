"""What a fold reads of a target: labelled rows of the snapshots (before their features are
read), the target's training, evaluation and final rows, and the memory helpers that keep
millions of row numbers narrow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training import fitting as fit


def narrow(rows: np.ndarray, n: int) -> np.ndarray:
    """Row numbers of an n-row table as int32 while they fit: row numbers of every snapshot are
    kept, a fold's training rows with their labels until sampled, the layout's
    order by the model matrix."""
    return rows.astype(np.int32) if n < np.iinfo(np.int32).max else rows


ROW_INDEX_STEP = 1 << 22  # mask entries turned into row numbers at a time


def row_index(mask: np.ndarray) -> np.ndarray:
    """The rows where `mask` holds (`narrow`), found a piece of the mask at a time: whole, the
    int64 row numbers of every snapshot would be made before their int32 copy."""
    if len(mask) >= np.iinfo(np.int32).max:
        return np.flatnonzero(mask)
    out = np.empty(int(np.count_nonzero(mask)), dtype=np.int32)
    at = 0
    for start in range(0, len(mask), ROW_INDEX_STEP):
        rows = np.flatnonzero(mask[start : start + ROW_INDEX_STEP])
        out[at : at + len(rows)] = rows + start
        at += len(rows)
    return out


@dataclass(frozen=True)
class Labelled:
    """Rows of the snapshots with labels and weights (0: unused), before their features are
    read: sampling and counting need only these, so a matrix held on a cluster is read for the
    rows a fit uses, not for every row up to a fold date. Held narrow (int32 rows, int8 labels,
    float32 weights: 13 bytes a row, not 28); what a fit reads (`rows`) is float64."""

    index: np.ndarray  # rows of the snapshots
    y: np.ndarray  # 1/0 (int8)
    w: np.ndarray  # float32
    deal: np.ndarray  # each row's deal, a code into `ids`
    ids: np.ndarray
    hashes: np.ndarray  # per deal code

    def where(self, keep: np.ndarray) -> Labelled:
        return Labelled(self.index[keep], self.y[keep], self.w[keep], self.deal[keep], self.ids, self.hashes)

    def deal_ids(self) -> np.ndarray:
        return self.ids[self.deal]

    def deals_by_outcome(self) -> tuple[int, int]:
        """Deals with a used positive row, and with a used negative row: counted by marking deal
        codes, not by sorting the rows' deals (every row of a fold)."""
        used = self.w > 0
        seen = [np.zeros(len(self.ids), dtype=bool) for _ in range(2)]
        for outcome, marks in enumerate(seen):
            marks[self.deal[used & (self.y == outcome)]] = True
        return int(np.count_nonzero(seen[1])), int(np.count_nonzero(seen[0]))

    def deals_of_each_outcome(self) -> int:
        """As `fit.Rows.deals_of_each_outcome`."""
        return min(self.deals_by_outcome())

    def sample(self, limit: int) -> Labelled:
        """At most about `limit` labelled rows, whole deals kept or dropped together (a stable hash)."""
        return self.where(self.sampled(limit))

    def sampled(self, limit: int) -> np.ndarray:
        """Which rows `sample` keeps (for what travels beside the rows, such as their reach)."""
        used = self.w > 0
        n = int(np.count_nonzero(used))
        # one selection, not the used rows and then their sample: a copy of every used row
        return used if n <= limit else used & by_hash(self.hashes, limit / n)[self.deal]

    def rows(self, x: Any) -> fit.Rows:
        return fit.Rows(x[self.index], self.y.astype(np.float64), self.w.astype(np.float64), self.deal_ids())


def by_hash(hashes: np.ndarray, share: float) -> np.ndarray:
    """Which deals (by their hashes) a sample of about `share` keeps: decided per deal and read by
    row, not hashed per row (two uint64 arrays of every row)."""
    return (hashes % 10_000) < share * 10_000


@dataclass
class Target:
    """What one target needs from a fold: its training rows known at F and its evaluation rows."""

    name: str
    train: Callable[[pd.Timestamp], Labelled]
    evaluate: Callable[[pd.Timestamp], tuple[np.ndarray, np.ndarray, np.ndarray]]  # rows, y, w at the end
    final: Callable[[], Labelled]  # every labelled row as known at the end
    recorded: Callable[[pd.Timestamp], Labelled] | None = None  # another label candidates may learn from (`Candidate.labels`)
    recent: Callable[[int], tuple[Labelled, np.ndarray]] | None = None  # the latest rows, followed partly (`labels.win_target`)
