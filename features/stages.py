"""Stage order: which stage comes after which, and which ones close a deal.

Stage names differ across CRMs and languages; everything numeric downstream uses the index
and the progress fraction, which mean the same whatever the names are.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputInvalid
from features.settings import StageConfig

log = logging.getLogger(__name__)

LOST_INDEX = -1

WON_WORDS = re.compile(r"won|win|closed[ _-]?won|gagn|ganad|赢|成交", re.IGNORECASE)
LOST_WORDS = re.compile(r"lost|lose|loss|closed[ _-]?lost|perdid|perdu|输|丢", re.IGNORECASE)


@dataclass(frozen=True)
class StageOrder:
    config: StageConfig

    @property
    def open(self) -> list[str]:
        return list(self.config.open)

    @property
    def n_open(self) -> int:
        return len(self.config.open)

    @property
    def won_index(self) -> int:
        """Won sits right after the last open stage, so 'a later stage' includes winning."""
        return self.n_open

    @property
    def names(self) -> list[str]:
        return [*self.config.open, self.config.won, self.config.lost]

    @property
    def _mapping(self) -> dict[str, int]:
        mapping = {name: i for i, name in enumerate(self.config.open)}
        mapping[self.config.won] = self.won_index
        mapping[self.config.lost] = LOST_INDEX
        return mapping

    def index(self, stages: pd.Series) -> np.ndarray:
        """Open stages 0..k-1, won k, lost -1; unknown names NaN."""
        return stages.map(self._mapping).to_numpy(dtype="float64")

    def index_of_names(self, names: np.ndarray) -> np.ndarray:
        """`index` for a few distinct names, without building a Series."""
        mapping = self._mapping
        return np.array([mapping.get(n, np.nan) for n in names], dtype="float64")

    def is_open(self, index: np.ndarray) -> np.ndarray:
        """Whether a stage index is an open stage (the one place that decides it)."""
        index = np.asarray(index, dtype="float64")
        return (index >= 0) & (index < self.n_open)

    def state(self, index: np.ndarray) -> np.ndarray:
        """'open', 'won' or 'lost' per stage index (unknown names: None)."""
        index = np.asarray(index, dtype="float64")
        return np.select([self.is_open(index), index == self.won_index, index == LOST_INDEX], ["open", "won", "lost"], None).astype(object)

    def progress(self, index: np.ndarray) -> np.ndarray:
        """Where an open stage sits in the pipeline, 0 (first) to 1 (last): comparable across CRMs."""
        return np.where(index >= 0, np.minimum(index, self.n_open - 1) / max(self.n_open - 1, 1), np.nan)


def infer_stage_config(stage_history: pd.DataFrame) -> tuple[StageConfig, str]:
    """Guess the stage order from the data: terminal stages by name or by being last, open stages
    by the order in which opportunities usually enter them. Returns the config and what was done."""
    hist = stage_history.sort_values(["opportunity_id", "entered_at"], kind="stable")
    names = pd.Index(hist["stage"].dropna().unique())
    if len(names) < 3:
        raise InputInvalid(f"cannot infer a stage order from {len(names)} stage names; give [stages] in oppscore.toml")
    is_last = ~hist["opportunity_id"].duplicated(keep="last")
    last_share = hist.assign(last=is_last).groupby("stage")["last"].mean()
    won = [n for n in names if WON_WORDS.search(str(n))]
    lost = [n for n in names if LOST_WORDS.search(str(n)) and n not in won]
    terminal = last_share.sort_values(ascending=False)
    if not won:
        won = [n for n in terminal.index if n not in lost][:1]
    if not lost:
        lost = [n for n in terminal.index if n not in won][:1]
    won_name, lost_name = won[0], lost[0]
    position = hist.assign(pos=hist.groupby("opportunity_id").cumcount())
    order = position[~position["stage"].isin([won_name, lost_name])].groupby("stage")["pos"].mean().sort_values()
    config = StageConfig(open=[str(s) for s in order.index], won=str(won_name), lost=str(lost_name))
    message = (
        "no [stages] in the config: inferred the stage order from the data: "
        f"{' > '.join(config.open)}; won = {config.won!r}, lost = {config.lost!r}. "
        "Write it into oppscore.toml to fix it."
    )
    return config, message
