"""The two labels of DESIGN.md, from what was known at a given time; unknown is NaN, never a guess.

Both are about a fixed horizon after the snapshot, so neither waits for a loss to be recorded
(real CRMs record losses weeks or months late, in bulk):
- won within H: the opportunity entered the won stage within H days after the snapshot (1), or
  H days passed without a win (0); a win after `known_at`, or a horizon that ends after it: no
  label. H is the org's own (`win_horizon`).
- stalled: in the H days after the snapshot it neither entered a later stage nor was won (1),
  or it did (0); a horizon that ends after `known_at`: no label.

The stall label is computed here in pandas as snapshots are built; the win label on arrays
(`win_target`, read by row as a fold asks), whose definition in pandas the tests hold it to
(`tests/models/label_definitions.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.asof import positions
from features.frame import stage_state
from features.stages import LOST_INDEX, StageOrder
from features.stays import by_deals
from features.tables import Tables
from features.times import DAY_NS, NAT, ns
from training.censoring import CloseTimeModel, win_weights
from training.targets import Labelled, Target, by_hash, row_index

if TYPE_CHECKING:  # built by training.labelled_snapshots, which reads the stall label here
    from training.labelled_snapshots import Snapshots


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


NO_WIN = np.iinfo(np.int64).max  # a snapshot whose deal was not won after it by the export's end
CENSORING_ROWS = 1_000_000  # (as_of, close) pairs the censoring model is fitted on, at most (whole deals, a stable hash)
HORIZON_ROWS = 1_000_000  # snapshots the win horizon is learned from, at most (whole deals, a stable hash)
WIN_COVERAGE = 0.9  # the share of the won snapshots whose win the win label's horizon covers
MIN_WIN_HORIZON = 14
DEFAULT_WIN_HORIZON = 90  # days, when no snapshot's deal was won later


class Outcomes:
    """Each deal's outcome as known at any date, read from its stage history as integers: the
    deal's code in the snapshots, when each stage was entered, and that stage's outcome (won,
    lost, or neither: open or an unknown name). What `final_states` says of the history up to a
    date, without filtering millions of text rows and grouping them again at every fold date."""

    NEITHER, WON, LOST = 0, 1, 2

    def __init__(self, history: pd.DataFrame, stages: StageOrder, ids: np.ndarray) -> None:
        known = pd.Index(ids, dtype=object)  # one lookup table for every piece (not inferred as str: a copy of every id)
        pieces = [self._coded(part, stages, known) for part in by_deals(history)]  # a few deals at a time: the text of every row and its temporaries never at once
        deal, entered, outcome = (np.concatenate([p[k] for p in pieces]) for k in range(3))
        del pieces
        if len(deal) > 1 and (deal[1:] < deal[:-1]).any():  # `ids` sorted as the history is: in order already
            order = np.argsort(deal, kind="stable")  # a deal's rows keep the history's (time) order
            deal, entered, outcome = deal[order], entered[order], outcome[order]
        self.deal, self.entered, self.outcome = deal, entered, outcome
        self.n_deals = len(ids)

    @classmethod
    def _coded(cls, history: pd.DataFrame, stages: StageOrder, ids: pd.Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Some deals' rows as (deal code, entered ns, outcome), without the rows of deals that
        have no snapshot (never asked about), and of a deal's consecutive rows with the same
        outcome only the first: a deal's rows are in time order, so the last row entered by a
        date has the outcome of the last kept one (most deals: open stages, then one close; the
        rows held through the whole run are about halved)."""
        deal = _codes_by_run(history["opportunity_id"].to_numpy(dtype=object), ids)
        index = stages.index(history["stage"])  # numbers, not text states
        outcome = np.select([index == stages.won_index, index == LOST_INDEX], [cls.WON, cls.LOST], cls.NEITHER).astype(np.int8)
        changed = np.ones(len(deal), dtype=bool)
        changed[1:] = (deal[1:] != deal[:-1]) | (outcome[1:] != outcome[:-1])
        keep = changed & (deal >= 0)
        entered = ns(history["entered_at"])[keep]
        entered = np.where(entered == NAT, np.iinfo(np.int64).max, entered)  # no time: never known
        return deal[keep].astype(np.int32), entered, outcome[keep]

    def known_at(self, at: pd.Timestamp) -> np.ndarray:
        """Per deal: 1.0 won, 0.0 lost, NaN neither, as its last stage entered by `at` says."""
        seen = self.entered <= at.value
        deal, outcome = self.deal[seen], self.outcome[seen]
        last = np.flatnonzero(np.append(deal[1:] != deal[:-1], True)) if len(deal) else np.array([], dtype=np.int64)
        out = np.full(self.n_deals, np.nan)
        out[deal[last]] = np.array([np.nan, 1.0, 0.0])[outcome[last]]
        return out


class Entries:
    """Each deal's entries into some stages (its wins; its closes), by its code in the
    snapshots: what a row's label reads (its first entry after it), found for a few rows at a
    time rather than kept for every snapshot (8 bytes a snapshot)."""

    def __init__(self, history: pd.DataFrame, ids: np.ndarray, names: list[str]) -> None:
        known = pd.Index(ids, dtype=object)  # not inferred as str: a copy of every id
        pieces = []
        for part in by_deals(history):
            part = part[part["stage"].isin(names)]
            deal = _codes_by_run(part["opportunity_id"].to_numpy(dtype=object), known)
            pieces.append((deal[deal >= 0], ns(part["entered_at"])[deal >= 0]))  # deals with no snapshot: never asked about
        self.deal = np.concatenate([p[0] for p in pieces])
        self.entered = np.concatenate([p[1] for p in pieces])

    def first_after(self, deal: np.ndarray, time: np.ndarray) -> np.ndarray:
        """ns of each (deal, time)'s first entry strictly after `time`; NO_WIN where none."""
        pos = positions(self.deal, self.entered, deal, time, direction="forward", exact=False)
        found = self.entered[np.maximum(pos, 0)] if len(self.entered) else np.full(len(pos), NAT)
        return np.where((pos >= 0) & (found != NAT), found, NO_WIN)


def Wins(history: pd.DataFrame, stages: StageOrder, ids: np.ndarray) -> Entries:  # noqa: N802 - a kind of Entries
    return Entries(history, ids, [stages.config.won])


def _codes_by_run(values: np.ndarray, categories: np.ndarray | pd.Index) -> np.ndarray:
    """Each value's code among `categories` (-1: not there), looked up once per run of equal
    values: a deal's stage-history rows are together, so there is a lookup per deal, not per
    row, and the lookup's own arrays are that much smaller."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int32)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    codes = pd.Categorical(values[starts], categories=categories).codes.astype(np.int32)
    return np.repeat(codes, np.diff(np.append(starts, len(values))))


LABEL_STEP = 1 << 20  # rows whose first win is looked up at a time


def days_to_win(snaps: Snapshots, wins: Entries, rows: np.ndarray) -> np.ndarray:
    """Days from each row's snapshot to its deal's first win after it (inf: none by the end)."""
    time = snaps.times(rows)
    won = wins.first_after(snaps.deal[rows], time)
    return np.where(won == NO_WIN, np.inf, (won - time) / DAY_NS)


NEVER = np.iinfo(np.uint16).max  # no win after the snapshot by the export's end (or past 179 years)


def to_win_days(snaps: Snapshots, wins: Entries) -> np.ndarray:
    """Per snapshot, whole days (rounded up) to its deal's first win after it, NEVER without one:
    2 bytes a row, what a row's label and its weight at any date are read from, found a few
    rows at a time (never the float days of every row at once: 8 bytes a row)."""
    out = np.empty(len(snaps), dtype=np.uint16)
    for start in range(0, len(snaps), LABEL_STEP):
        days = days_to_win(snaps, wins, np.arange(start, min(start + LABEL_STEP, len(snaps))))
        out[start : start + LABEL_STEP] = np.where(np.isfinite(days), np.minimum(np.ceil(days), NEVER - 1), NEVER)
    return out


def win_horizon(snaps: Snapshots, wins: Entries, end: pd.Timestamp, every_days: int, horizon_days: int | None = None) -> WinHorizon:
    """The win label's horizon H, from the org's own time from snapshot to win: the days within
    which WIN_COVERAGE of the snapshots of deals won later saw their win, in whole snapshot
    intervals, at least MIN_WIN_HORIZON days, and at most half of the snapshots' span (so that
    half of the dates can be labelled, in a young export too); `horizon_days` when set.

    A chance of a win within H is what is served, not one of a win at all: turning one into the
    other by each stage's share of later wins (learned from snapshots followed 2 H) made every
    world measured worse against what happened (issue 28's note)."""
    rows = row_index(snaps.until(end.value))
    if len(rows) > HORIZON_ROWS:  # a distribution: a sample of whole deals learns it
        rows = rows[by_hash(snaps.hashes, HORIZON_ROWS / len(rows))[snaps.deal[rows]]]
    days = days_to_win(snaps, wins, rows)
    won = np.isfinite(days)
    span = (end.value - snaps.grid[0]) / DAY_NS if len(snaps.grid) else 0.0
    cap = max(MIN_WIN_HORIZON, int(span / 2 // every_days * every_days))
    if horizon_days is not None:
        days_h, why, wanted = horizon_days, "set in oppscore.toml ([win] horizon_days)", horizon_days
    elif not won.any():
        return WinHorizon(min(DEFAULT_WIN_HORIZON, cap), float("nan"), 0, "no snapshot of a deal won later: the default")
    else:
        wanted = float(np.quantile(days[won], WIN_COVERAGE))
        days_h = int(np.clip(np.ceil(wanted / every_days) * every_days, MIN_WIN_HORIZON, cap))
        why = ""
    followed = won & (snaps.times(rows) + days_h * DAY_NS <= end.value)
    covered = float(np.mean(days[followed] <= days_h)) if followed.any() else float("nan")
    if horizon_days is None:
        why = f"{covered:.0%} of the snapshots of deals won later saw the win within {days_h} days"
        if days_h < wanted:
            why += f" (the export spans {span:.0f} days of snapshots: H is at most half of them)"
    return WinHorizon(days_h, covered, int(won.sum()), why)




@dataclass(frozen=True)
class WinHorizon:
    """What a win probability means: won within `days` of the date it is made for."""

    days: int
    coverage: float  # share of the (followed) won snapshots whose win came within `days`
    won_snapshots: int
    why: str

    def to_dict(self) -> dict:
        return {"horizon_days": self.days, "coverage": None if np.isnan(self.coverage) else round(self.coverage, 3), "won_snapshots": self.won_snapshots,
                "said": f"won within {self.days} days of the date scored", "why": self.why}


def _fixed_horizon(name: str, snaps: Snapshots, y: np.ndarray, horizon_ns: int, end: pd.Timestamp) -> Target:
    """A label about the `horizon_ns` after each snapshot (`y`, int8 per row): known at a date
    for the snapshots at least a horizon older; evaluated at a date whose horizon has passed by
    the export's end. It needs no record of a loss: what did not happen within the horizon is
    known once the horizon has passed, however late a CRM records its losses."""

    def train(at: pd.Timestamp) -> Labelled:
        rows = row_index(snaps.until(at.value - horizon_ns))
        return snaps.labelled(rows, y[rows], np.ones(len(rows), dtype=np.float32))

    def evaluate(at: pd.Timestamp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(snaps.on(at)) if at.value + horizon_ns <= end.value else np.zeros(0, dtype=np.int64)
        return rows, y[rows].astype(np.float64), np.ones(len(rows))

    def final() -> Labelled:
        return train(end)

    return Target(name, train, evaluate, final)


def win_target(tables: Tables, stages: StageOrder, snaps: Snapshots, end: pd.Timestamp, every_days: int = 7, horizon_days: int | None = None) -> tuple[Target, WinHorizon]:
    """Won within H days of the snapshot (H: `horizon_days`, else `win_horizon`): wins are
    recorded when they happen, losses often months late and in bulk, so a label that waits for
    a loss record calls every open deal a future win; this one waits only for H to pass.

    Learned from the snapshots H days old at least, never from younger ones with the wins they
    have shown so far, weighted for what they could not show yet: a learned model reads the
    date in the features (the point-in-time win rates, the pipeline's age), and the newest
    dates, where only wins are known, would teach it that the present is a time of wins.

    Where H is long (deals take months), that leaves a fold little and old data; candidates may
    learn instead from the outcome as recorded by the date (`Target.recorded`), and the backtest
    says, on this label, whether that served them."""
    wins = Wins(tables.stage_history, stages, snaps.ids)
    horizon = win_horizon(snaps, wins, end, every_days, horizon_days)
    days = to_win_days(snaps, wins)
    del wins
    y = (days <= horizon.days).astype(np.int8)
    target = _fixed_horizon("win", snaps, y, horizon.days * DAY_NS, end)
    target.recorded = _recorded(tables, stages, snaps)
    target.recent = _followed_so_far(snaps, y, _reach(snaps, days, horizon.days, end), horizon.days, end)
    return target, horizon


def _reach(snaps: Snapshots, days: np.ndarray, horizon_days: int, end: pd.Timestamp) -> np.ndarray:
    """Of the wins within H, the share that came within d days of the snapshot, for d = 0 … H:
    from the snapshots followed for H, what a row followed d days has seen of its chance."""
    full = row_index(snaps.until(end.value - horizon_days * DAY_NS))
    won = days[full]
    won = won[won <= horizon_days].astype(np.int64)
    if not len(won):
        return np.ones(horizon_days + 1)
    return np.cumsum(np.bincount(won, minlength=horizon_days + 1)[: horizon_days + 1]) / len(won)


def _followed_so_far(snaps: Snapshots, y: np.ndarray, reach: np.ndarray, horizon_days: int, end: pd.Timestamp) -> Callable[[int], tuple[Labelled, np.ndarray]]:
    """The rows of the last `window_days` before the export's end and the H before them, each
    with its label as far as the end shows it (a win within H, or within the days followed) and
    its reach (the share of its chance of a win within H that those days could show: 1 for a
    row followed H days). Calibration in the large on them follows a level that moves (a young
    org's), where the rows followed whole are H days older (issue 40: 0.07 promised where the
    deals open then won 0.02). A win seen early is a win; a row not yet won counts as much as
    it could have shown."""

    def recent(window_days: int) -> tuple[Labelled, np.ndarray]:
        rows = row_index(~snaps.until(end.value - (horizon_days + window_days) * DAY_NS))
        followed = np.clip((end.value - snaps.times(rows)) // DAY_NS, 0, horizon_days).astype(np.int64)
        return snaps.labelled(rows, y[rows], np.ones(len(rows), dtype=np.float32)), reach[followed]

    return recent


def _recorded(tables: Tables, stages: StageOrder, snaps: Snapshots) -> Callable[[pd.Timestamp], Labelled]:
    """The outcome as recorded by a date: won 1, lost 0, still open unknown; each row weighted
    against censoring (training.censoring): a snapshot shortly before the date is labelled only
    if its deal closed fast. Unbiased only where losses are recorded when they happen."""
    outcomes, closes = Outcomes(tables.stage_history, stages, snaps.ids), Entries(tables.stage_history, snaps.ids, [stages.config.won, stages.config.lost])

    def labelled(at: pd.Timestamp) -> Labelled:
        rows = row_index(snaps.until(at.value))
        outcome = outcomes.known_at(at)  # per deal: 1, 0, NaN
        fitted = rows
        if len(rows) > CENSORING_ROWS:  # how long deals take is a distribution: a sample of whole deals learns it
            fitted = rows[by_hash(snaps.hashes, CENSORING_ROWS / len(rows))[snaps.deal[fitted]]]
        time = snaps.times(fitted)
        model = CloseTimeModel().fit(time, closes.first_after(snaps.deal[fitted], time), at)
        per_date = win_weights(model, snaps.grid, at).astype(np.float32)  # a row's weight depends on its date only
        deal = snaps.deal[rows]
        return snaps.labelled(rows, (outcome == 1).astype(np.int8)[deal], per_date[snaps.slot[rows]] * np.where(np.isnan(outcome), np.float32(0), np.float32(1))[deal])

    return labelled


def stall_target(snaps: Snapshots, end: pd.Timestamp) -> Target:
    """Stall labels need the whole horizon after the snapshot to be known."""
    return _fixed_horizon("stall", snaps, (snaps.stalled == 1).astype(np.int8), snaps.horizon_ns, end)

