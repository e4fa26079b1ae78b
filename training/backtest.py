"""A rolling-origin backtest: every closed deal teaches, every model figure is out of sample.

At each fold date F (the latest date whose open deals have mostly closed by the export's end,
then every four weeks back), each candidate is trained on what was known at F — snapshots up
to F, labelled as known at F — and predicts the deals open at F; those predictions are scored
against the outcomes known at the export's end. Evaluation labels come from after F (that is
what a backtest is); features never do (they are point-in-time by construction).

Pooling the folds gives every model and baseline a figure on the same rows, with a bootstrap
interval by deal. The candidate with the lowest pooled log loss (after a calibrator fitted
leave-one-fold-out) is the one that serves; its calibrator is then fitted on all of its
out-of-fold predictions, so calibration never starves on a slice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from sklearn.naive_bayes import CategoricalNB

from features.asof import positions
from features.frame import FeatureSpec
from features.stages import LOST_INDEX, StageOrder
from features.stays import by_deals
from features.tables import Tables
from features.times import DAY_NS, NAT, from_ns, ns
from training import models as fit
from training.censoring import CloseTimeModel, win_weights
from training.metrics import bootstrap, metrics

log = logging.getLogger(__name__)

FOLD_SPACING_DAYS = 28
MAX_FOLDS = 8
MIN_EVAL_ROWS = 5  # labelled open deals at a fold date, or the date teaches nothing
MIN_TRAIN_DEALS = 3  # closed deals of each outcome known at a fold date
LARGE_ROWS = 150_000  # fold training rows past which fewer folds are enough (and are sampled)
SIMPLEST_FIRST = ("configured weights", "pooled rates", "logistic regression", "lightgbm", "logistic regression on recorded outcomes", "lightgbm on recorded outcomes")
DEFAULT_ORDER = ("lightgbm", "logistic regression", "pooled rates")  # the first the labelled rows support serves, unless a backtest shows better
CAPABLE = {"configured weights": 0, "pooled rates": 0, "logistic regression": 1, "logistic regression on recorded outcomes": 1, "lightgbm": 2, "lightgbm on recorded outcomes": 2}


NO_WIN = np.iinfo(np.int64).max  # a snapshot whose deal was not won after it by the export's end
CENSORING_ROWS = 1_000_000  # (as_of, close) pairs the censoring model is fitted on, at most (whole deals, a stable hash)
HORIZON_ROWS = 1_000_000  # snapshots the win horizon is learned from, at most (whole deals, a stable hash)
WIN_COVERAGE = 0.9  # the share of the won snapshots whose win the win label's horizon covers
MIN_WIN_HORIZON = 14
DEFAULT_WIN_HORIZON = 90  # days, when no snapshot's deal was won later


@dataclass
class Snapshots:
    """Every training snapshot of the export, what the slices need of its features, its model
    matrix and what is known of its outcome. In (opportunity_id, as_of) order, whatever the
    partitioning, so a partitioned export gives the same rows as a whole one. A snapshot's deal
    is a code into `ids` (the frame's categories, sorted): labels are looked up per deal and
    deals counted and sampled by integer, not by millions of strings."""

    frame: pd.DataFrame  # opportunity_id, the stage and the segment columns (text ones categorical)
    x: Any  # the model matrix (float32): an array, or one held by partition on a cluster (indexed the same way)
    grid: np.ndarray  # the distinct snapshot times, ns ascending
    slot: np.ndarray  # each row's time, as its place in `grid` (int32)
    stalled: np.ndarray  # 1/0; NaN where the horizon passes the export's end (float32)
    horizon_ns: int

    @classmethod
    def at_times(cls, frame: pd.DataFrame, x: Any, time: np.ndarray, stalled: np.ndarray, horizon_ns: int) -> Snapshots:
        """Snapshots taken at `time` (ns, one per row). Snapshots fall on a grid of dates, so a
        row's time is held as its date's place on the grid: what depends on a row only through
        its time (the censoring weights, the rows up to or at a fold date) is computed per date
        and read by row, and 30M rows hold 4 bytes each, not 8."""
        codes, grid = pd.factorize(time, sort=True)
        return cls(frame, x, np.asarray(grid, dtype=np.int64), codes.astype(np.int32), stalled, horizon_ns)

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def time(self) -> np.ndarray:
        """Every row's time (ns), made on demand (240 MB at 3M deals): what reads every row
        asks `until` or `on`, what reads a few `times`."""
        return self.grid[self.slot]

    def times(self, rows: np.ndarray) -> np.ndarray:
        return self.grid[self.slot[rows]]

    def until(self, t_ns: int) -> np.ndarray:
        """Which rows were taken at or before `t_ns`."""
        return self.slot < np.searchsorted(self.grid, t_ns, side="right")

    def on(self, t: pd.Timestamp) -> np.ndarray:
        """Which rows were taken at `t`."""
        return self.at_time(slice(None), t)

    @cached_property
    def deal(self) -> np.ndarray:
        return self.frame["opportunity_id"].cat.codes.to_numpy()

    @cached_property
    def ids(self) -> np.ndarray:
        return self.frame["opportunity_id"].cat.categories.to_numpy(dtype=object)

    def share_ids(self, known: pd.Series) -> None:
        """Hold `ids` as the objects of `known` (the opportunities' ids, each once), not as new
        strings made from the categories: at 3M deals, 3M strings of about 70 bytes that the
        opportunities table already holds. Left as they are when a deal is not among them."""
        known = pd.Index(known.to_numpy(dtype=object), dtype=object)  # not inferred as str: its values would be new strings
        at = known.get_indexer(self.frame["opportunity_id"].cat.categories)
        if len(at) and (at >= 0).all():
            self.__dict__["ids"] = known.to_numpy()[at]  # what the cached property returns from now on

    def at_time(self, rows: np.ndarray | slice, t: pd.Timestamp) -> np.ndarray:
        """Which of `rows` are snapshots taken at `t`."""
        k = int(np.searchsorted(self.grid, t.value))
        if k == len(self.grid) or self.grid[k] != t.value:
            return np.zeros(len(self.slot[rows]), dtype=bool)
        return self.slot[rows] == k

    @cached_property
    def hashes(self) -> np.ndarray:
        """A stable hash of each deal's id (what samples whole deals the same on every engine).
        Hashed as they are (the same values as hashing them as `str`), neither copied into
        another string column nor factorized: the ids are distinct, and at 3M deals either
        copy raised the client's peak."""
        return pd.util.hash_pandas_object(pd.Series(self.ids, dtype=object), index=False, categorize=False).to_numpy()

    def points(self, rows: np.ndarray) -> pd.DataFrame:
        """The (opportunity_id, as_of) of the given rows."""
        return pd.DataFrame({"opportunity_id": self.ids[self.deal[rows]], "as_of": from_ns(self.times(rows))})

    def labelled(self, rows: np.ndarray, y: np.ndarray, w: np.ndarray) -> Labelled:
        return Labelled(rows, y, w, self.deal[rows], self.ids, self.hashes)

    @classmethod
    def concat(cls, pieces: list[Snapshots]) -> tuple[Snapshots, np.ndarray]:
        """Partitions' snapshots as one, in the whole export's (opportunity_id, as_of) order, and
        that order: for each row, its row among the pieces laid end to end (by which the caller
        lays out the model matrices, kept apart). Laid out a column at a time, the pieces emptied
        as they are read: at 30M rows, the pieces, their concatenation and its ordered copy all
        alive at once were 1.8 GiB of the client's peak."""
        names = list(pieces[0].frame.columns)
        frames = {c: [p.frame[c] for p in pieces] for c in names}
        stalled = [p.stalled for p in pieces]
        grid = np.unique(np.concatenate([p.grid for p in pieces]))
        slot = np.concatenate([np.searchsorted(grid, p.grid).astype(np.int32)[p.slot] for p in pieces])  # each piece's dates on the joint grid
        horizon_ns = pieces[0].horizon_ns
        for p in pieces:
            p.frame = p.slot = p.stalled = None
        deal = _concatenated(frames.pop("opportunity_id"))
        order = narrow(np.lexsort((slot, deal.cat.codes.to_numpy())), len(slot))  # by deal, then time; the matrix keeps it
        columns = {"opportunity_id": deal.iloc[order].reset_index(drop=True)}
        del deal
        for c in list(frames):
            column = _concatenated(frames.pop(c))
            columns[c] = column.iloc[order].reset_index(drop=True)
            del column
        return cls(frame=pd.DataFrame({c: columns[c] for c in names}), x=None, grid=grid, slot=slot[order], stalled=np.concatenate(stalled)[order], horizon_ns=horizon_ns), order


def _concatenated(parts: list[pd.Series]) -> pd.Series:
    """One column of the partitions' snapshots: categorical ones keep their codes (their
    vocabularies joined, sorted), where pd.concat would turn them into text."""
    if all(isinstance(part.dtype, pd.CategoricalDtype) for part in parts):
        return pd.Series(union_categoricals(parts, sort_categories=True))
    return pd.concat(parts, ignore_index=True)


def narrow(rows: np.ndarray, n: int) -> np.ndarray:
    """Row numbers of an n-row table as int32 while they fit: row numbers of every snapshot (30M
    at 3M deals) are kept, a fold's training rows with their labels until sampled, the layout's
    order by the model matrix."""
    return rows.astype(np.int32) if n < np.iinfo(np.int32).max else rows


ROW_INDEX_STEP = 1 << 22  # mask entries turned into row numbers at a time


def row_index(mask: np.ndarray) -> np.ndarray:
    """The rows where `mask` holds (`narrow`), found a piece of the mask at a time: whole, the
    int64 row numbers of 30M snapshots (240 MB) were made before their int32 copy."""
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
        codes, not by sorting the rows' deals (a fold's 25M rows at 3M deals)."""
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
        used = self.w > 0
        n = int(np.count_nonzero(used))
        # one selection, not the used rows and then their sample: at 3M deals a copy of 25M rows
        return self.where(used if n <= limit else used & _by_hash(self.hashes, limit / n)[self.deal])

    def rows(self, x: Any) -> fit.Rows:
        return fit.Rows(x[self.index], self.y.astype(np.float64), self.w.astype(np.float64), self.deal_ids())


def _by_hash(hashes: np.ndarray, share: float) -> np.ndarray:
    """Which deals (by their hashes) a sample of about `share` keeps: decided per deal and read by
    row, not hashed per row (two uint64 arrays of 30M rows at 3M deals)."""
    return (hashes % 10_000) < share * 10_000


@dataclass
class Target:
    """What one target needs from a fold: its training rows known at F and its evaluation rows."""

    name: str
    train: Callable[[pd.Timestamp], Labelled]
    evaluate: Callable[[pd.Timestamp], tuple[np.ndarray, np.ndarray, np.ndarray]]  # rows, y, w at the end
    final: Callable[[], Labelled]  # every labelled row as known at the end
    recorded: Callable[[pd.Timestamp], Labelled] | None = None  # another label candidates may learn from (`Candidate.labels`)


class Outcomes:
    """Each deal's outcome as known at any date, read from its stage history as integers: the
    deal's code in the snapshots, when each stage was entered, and that stage's outcome (won,
    lost, or neither: open or an unknown name). What `final_states` says of the history up to a
    date, without filtering millions of text rows and grouping them again at every fold date."""

    NEITHER, WON, LOST = 0, 1, 2

    def __init__(self, history: pd.DataFrame, stages: StageOrder, ids: np.ndarray) -> None:
        known = pd.Index(ids, dtype=object)  # one lookup table for every piece (not inferred as str: a copy of every id)
        pieces = [self._coded(part, stages, known) for part in by_deals(history)]  # a few deals at a time: the text and its temporaries of 13M rows never at once
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
        date has the outcome of the last kept one (most deals: open stages, then one close; at
        3M deals, 13M rows held through the whole run become about 6M)."""
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
    time rather than kept for every snapshot (30M int64 at 3M deals: 240 MB of the client's)."""

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
    values: a deal's stage-history rows are together, so 13M rows (3M deals) are 3M lookups,
    and the lookup's own arrays a quarter of the size."""
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
    rows at a time (at 3M deals the float days of 30M rows at once were 240 MB)."""
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
        rows = rows[_by_hash(snaps.hashes, HORIZON_ROWS / len(rows))[snaps.deal[rows]]]
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
    y = (to_win_days(snaps, wins) <= horizon.days).astype(np.int8)
    del wins
    target = _fixed_horizon("win", snaps, y, horizon.days * DAY_NS, end)
    target.recorded = _recorded(tables, stages, snaps)
    return target, horizon


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
            fitted = rows[_by_hash(snaps.hashes, CENSORING_ROWS / len(rows))[snaps.deal[fitted]]]
        time = snaps.times(fitted)
        model = CloseTimeModel().fit(time, closes.first_after(snaps.deal[fitted], time), at)
        per_date = win_weights(model, snaps.grid, at).astype(np.float32)  # a row's weight depends on its date only
        deal = snaps.deal[rows]
        return snaps.labelled(rows, (outcome == 1).astype(np.int8)[deal], per_date[snaps.slot[rows]] * np.where(np.isnan(outcome), np.float32(0), np.float32(1))[deal])

    return labelled


def stall_target(snaps: Snapshots, end: pd.Timestamp) -> Target:
    """Stall labels need the whole horizon after the snapshot to be known."""
    return _fixed_horizon("stall", snaps, (snaps.stalled == 1).astype(np.int8), snaps.horizon_ns, end)


def fold_dates(target: Target, snaps: Snapshots) -> list[pd.Timestamp]:
    """From the latest date with enough labelled open deals, every four weeks back, while the
    date's training rows hold closed deals of both outcomes; oldest first."""
    grid = snaps.grid
    chosen: list[pd.Timestamp] = []
    for t in grid[::-1]:
        at = pd.Timestamp(int(t), tz="UTC")
        if chosen and (chosen[-1] - at).days < FOLD_SPACING_DAYS:
            continue
        _, y, w = target.evaluate(at)
        if (w > 0).sum() < MIN_EVAL_ROWS:
            continue
        rows = target.train(at)
        deals, large = rows.deals_of_each_outcome(), (rows.w > 0).sum() > LARGE_ROWS
        del rows  # one date's rows at a time: at 3M deals, the next date's 25M built beside these were the client's peak
        if deals < MIN_TRAIN_DEALS:
            break  # earlier dates know even less
        chosen.append(at)
        if len(chosen) >= (4 if large else MAX_FOLDS):
            break
    return chosen[::-1]


def naive_bayes(rows: fit.Rows, spec: FeatureSpec) -> Callable[[np.ndarray], np.ndarray]:
    """Odoo's predictive lead scoring: naive Bayes over the stage and the segment columns."""
    cols = [spec.columns.index(c) for c in spec.categorical]

    def enc(x: np.ndarray) -> np.ndarray:
        return (np.nan_to_num(x[:, cols], nan=-1.0) + 1).astype(np.int64)  # missing or unknown: its own category 0

    sizes = [len(spec.categories.get(spec.columns[c], [])) + 1 for c in cols]
    rows = rows.used()
    nb = CategoricalNB(alpha=1.0, min_categories=sizes).fit(enc(rows.x), rows.y, sample_weight=rows.w)
    if len(nb.classes_) < 2:
        return lambda x: np.full(len(x), float(nb.classes_[0]))
    return lambda x: nb.predict_proba(enc(x))[:, 1]


@dataclass
class Candidate:
    """One way of predicting, fitted anew at every fold."""

    name: str
    min_deals: int  # closed deals of each outcome it needs; below, the pooled rates stand in
    fit: Callable[[fit.Rows, pd.Timestamp], object]  # (rows known at a date, the date) → an estimator (scoring.models) or a predict function
    serves: bool = True
    labels: str = "target"  # what it learns from: the target's label, or "recorded" (`Target.recorded`); it is judged on the target's


def _better(y: np.ndarray, p: np.ndarray, than: np.ndarray, w: np.ndarray, deal: np.ndarray, reps: int = 200, seed: int = 0) -> bool:
    """Whether `p`'s log loss is lower than `than`'s beyond doubt: the 90 % interval of their
    difference, over resamples of deals (a deal's rows move together), lies below zero.
    Resampled one repetition at a time (Poisson weights per deal), so the evaluation points of
    a large export are never repeated 200 times in memory."""
    keep = w > 0
    if not keep.any():
        return False
    y, w, codes = y[keep], w[keep], pd.factorize(deal[keep])[0]
    loss = lambda q: -(y * np.log(np.clip(q, 1e-6, 1 - 1e-6)) + (1 - y) * np.log(np.clip(1 - q, 1e-6, 1 - 1e-6)))  # noqa: E731
    gap = np.bincount(codes, weights=w * (loss(p[keep]) - loss(than[keep])))
    mass = np.bincount(codes, weights=w)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(reps):
        k = rng.poisson(1.0, len(mass))
        if (k * mass).sum() > 0:
            draws.append((k * gap).sum() / (k * mass).sum())
    return bool(draws) and float(np.quantile(draws, 0.95)) < 0


@dataclass
class TargetBacktest:
    """The backtest of one target: folds, pooled out-of-fold predictions, the choice."""

    name: str
    folds: list[pd.Timestamp]
    rows: np.ndarray  # snapshot row of each evaluation point
    fold: np.ndarray  # fold index of each evaluation point
    y: np.ndarray
    w: np.ndarray
    deal: np.ndarray  # each evaluation point's deal (a code into the snapshots' ids)
    predictions: dict[str, np.ndarray]  # candidate or baseline → out-of-fold probability
    calibrated: dict[str, tuple[str, np.ndarray]]  # serving candidate → (calibrator kind, cross-fitted predictions)
    stood_in: dict[str, list[int]]  # candidate → the folds where the rates stood in for it (too few deals)
    rounds: dict[str, list[int]] = field(default_factory=dict)  # per booster candidate, its rounds per fold
    fold_models: dict[str, list] = field(default_factory=dict)  # candidate → estimator per fold
    supported: list[str] | None = None  # the serving candidates every labelled row supports (set before the choice is read; None: all)

    @property
    def chosen(self) -> str:
        return self._choice[0]

    def tried(self, name: str) -> bool:
        """Whether the backtest says anything of the candidate itself: fitted (not stood in
        for by the rates) at the last fold, the one nearest the final fit. One never fitted
        would serve with a calibrator learned on the rates' predictions."""
        return len(self.folds) - 1 not in self.stood_in.get(name, [])

    def own_folds(self, name: str) -> np.ndarray:
        """The evaluation points of the folds where the candidate was itself fitted: what its
        served calibrator is fitted on."""
        return ~np.isin(self.fold, self.stood_in.get(name, []))

    @property
    def why(self) -> str:
        """Why the chosen candidate serves, in words."""
        return self._choice[1]

    @cached_property
    def _choice(self) -> tuple[str, str]:
        """The most capable candidate every labelled row supports (`DEFAULT_ORDER`, `supported`)
        serves, learning from wins within the horizon or from the outcomes as recorded, whichever
        had the lower backtest log loss; unless the backtest shows a more capable one (`CAPABLE`)
        better beyond doubt (`_better`); the best of those then. A fold learns from the snapshots a label's
        horizon before its date, far fewer than the final fit, and a learned model gains more
        from the difference than a rate does: measured against what happened later
        (benchmarks/after_the_fact.py), the refitted learned model was the better one where small
        folds had preferred a rate or the configured weights. One guard a ranking product needs: a
        learned model that ranks deals worse than the stage alone is not served (a better log
        loss can come from the base rate only), and the next most capable is the default then."""
        scores = {name: fit.weighted_log_loss(self.y, p, self.w) for name, (_, p) in self.calibrated.items()}
        floor = metrics(self.y, self.predictions["stage rate"], self.w)["auc"] if "stage rate" in self.predictions else float("nan")
        ranks = {name: metrics(self.y, self.predictions[name], self.w)["auc"] for name in self.calibrated}  # before calibration, which moves folds apart
        eligible = [n for n in scores if n in ("pooled rates", "configured weights") or (not ranks[n] < floor - 0.01 and self.tried(n))]
        supported = self.supported if self.supported is not None else list(scores)
        default = next((n for n in DEFAULT_ORDER if n in eligible and n in supported), "pooled rates")
        skipped = [n for n in DEFAULT_ORDER[: DEFAULT_ORDER.index(default)] if n in supported]
        why = "the most capable model the labelled data support" + (f" that the backtest tried and that ranks deals no worse than the stage ({', '.join(skipped)}: not)" if skipped else "")
        twin = f"{default} on recorded outcomes"  # the same model learning from more, and fresher, rows where losses are recorded in time
        if twin in eligible and scores[twin] < scores[default]:
            default, why = twin, f"{why}, learning from the outcomes as recorded (a lower backtest log loss than from wins within the horizon)"
        rivals = [n for n in eligible if n != default and (CAPABLE[n] > CAPABLE[default] or CAPABLE[default] == 0)]  # a rate never displaces a learned model the data support
        better = [n for n in rivals if _better(self.y, self.calibrated[n][1], self.calibrated[default][1], self.w, self.deal)]
        if not better:
            return default, f"{why}; no candidate did better beyond doubt in the backtest"
        best = min(better, key=lambda n: (scores[n], SIMPLEST_FIRST.index(n)))
        return best, f"better beyond doubt in the backtest than {default} ({why}): pooled log loss {scores[best]:.4f} against {scores[default]:.4f}"

    def served_predictions(self) -> np.ndarray:
        return self.calibrated[self.chosen][1]

    def pooled(self) -> dict[str, dict]:
        """Every candidate and baseline on the same rows: metrics and bootstrap intervals. The
        chosen one appears as "model" (cross-fitted calibration), the others as fitted."""
        shown = {"model": self.served_predictions(), **self.predictions}
        return {name: {**metrics(self.y, p, self.w), "interval_90": bootstrap(self.y, p, self.w, self.deal)} for name, p in shown.items()}

    def per_fold(self) -> list[dict]:
        out = []
        p = self.served_predictions()
        for k, at in enumerate(self.folds):
            m = self.fold == k
            got = metrics(self.y[m], p[m], self.w[m])
            out.append({"fold": str(at.date()), "deals": int(len(np.unique(self.deal[m & (self.w > 0)]))), **{k2: got[k2] for k2 in ("rows", "auc", "log_loss", "positive_rate")}})
        return out


def run(
    target: Target,
    snaps: Snapshots,
    spec: FeatureSpec,
    candidates: list[Candidate],
    progress: Callable[[str], None] | None = None,
) -> TargetBacktest | None:
    """Fit every candidate at every fold date; None when no date can be backtested."""
    step = progress or (lambda _m: None)
    folds = fold_dates(target, snaps)
    if not folds:
        return None
    names = [c.name for c in candidates]
    preds: dict[str, list[np.ndarray]] = {n: [] for n in names}
    stood_in: dict[str, list[int]] = {n: [] for n in names}
    fold_models: dict[str, list] = {n: [] for n in names}
    rows_all, fold_all, y_all, w_all = [], [], [], []
    rounds: dict[str, list[int]] = {n: [] for n in names}
    for k, at in enumerate(folds):
        step(f"{target.name} backtest: fold {k + 1} of {len(folds)} ({at:%Y-%m-%d})")
        train = {"target": target.train(at).sample(LARGE_ROWS).rows(snaps.x)}
        if target.recorded is not None and any(c.labels == "recorded" for c in candidates):
            train["recorded"] = target.recorded(at).sample(LARGE_ROWS).rows(snaps.x)
        rows, y, w = target.evaluate(at)
        x_eval = snaps.x[rows]
        deals = {kind: r.deals_of_each_outcome() for kind, r in train.items()}
        fallback = None
        for cand in candidates:
            if cand.labels not in train or deals[cand.labels] < cand.min_deals:
                if fallback is None:
                    fallback = next(c for c in candidates if c.name == "pooled rates").fit(train["target"], at)
                model = fallback
                stood_in[cand.name].append(k)
            else:
                model = cand.fit(train[cand.labels], at)
            if isinstance(model, fit.FittedBooster):
                rounds[cand.name].append(model.rounds)
                model = model.model
            fold_models[cand.name].append(model)
            preds[cand.name].append(_predict(model, x_eval))
        rows_all.append(rows), fold_all.append(np.full(len(rows), k)), y_all.append(y), w_all.append(w)
        del train
    rows = np.concatenate(rows_all)
    y, w, fold_of = np.concatenate(y_all), np.concatenate(w_all), np.concatenate(fold_all)
    pooled = {n: np.concatenate(p) for n, p in preds.items()}
    deal_of = snaps.deal[rows]
    calibrated = {}
    for cand in candidates:
        if not cand.serves:
            continue
        options = {kind: fit.cross_fitted(pooled[cand.name], y, w, fold_of, kind) for kind in fit.calibrator_kinds(y[w > 0])}
        # a calibrator learned on the folds' models, which learned from less, is applied to the
        # refitted one: only where it helps beyond doubt (the rates and the linear model come
        # calibrated), and always to the models of recorded outcomes (another label's levels)
        if cand.labels != "target" and len(options) > 1:  # learned from another label: its levels are that label's, and always need mapping
            kind = min((kd for kd in options if kd != "identity"), key=lambda kd: fit.weighted_log_loss(y, options[kd], w))
        else:
            better = [kd for kd in options if kd != "identity" and _better(y, options[kd], options["identity"], w, deal_of)]
            kind = min(better, key=lambda kd: fit.weighted_log_loss(y, options[kd], w)) if better else "identity"
        calibrated[cand.name] = (kind, options[kind])
    return TargetBacktest(target.name, folds, rows, fold_of, y, w, deal_of, pooled, calibrated, stood_in, rounds, fold_models)


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
    base = np.concatenate([_predict(m, x) for m, x in zip(models, x_of, strict=True)])
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
            shuffled.append(_predict(m, x))
        out[family] = round(fit.weighted_log_loss(bt.y, np.concatenate(shuffled), bt.w) - base_loss, 4)
    return out


def _predict(model, x: np.ndarray) -> np.ndarray:
    return model.probability(x) if hasattr(model, "probability") else model(x)
