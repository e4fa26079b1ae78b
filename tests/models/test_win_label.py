"""The win label of the backtest and the served probability: won within H days of a snapshot.

It must be the label DESIGN.md defines (`training.labels.won_within_label`), learned at a date
only from snapshots whose horizon has passed then, and never read a row recorded after it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.settings import StageConfig
from features.stages import StageOrder
from features.tables import Tables
from features.times import DAY_NS
from tests.models.label_definitions import won_within_label
from training.labelled_snapshots import Snapshots
from training.labels import NO_WIN, Wins, win_horizon, win_target

STAGES = StageOrder(StageConfig(open=["A", "B"], won="W", lost="L"))
START = pd.Timestamp("2025-01-01", tz="UTC")


def day(d: float) -> pd.Timestamp:
    return START + pd.Timedelta(days=d)


def _history(rows) -> pd.DataFrame:
    ids, names, days = zip(*rows, strict=True) if rows else ((), (), ())
    return pd.DataFrame({"opportunity_id": pd.Series(ids, dtype=object), "stage": pd.Series(names, dtype=object),
                         "entered_at": pd.Series([day(d) for d in days], dtype="datetime64[ns, UTC]")})


def _tables(rows) -> Tables:
    return Tables(pd.DataFrame({"opportunity_id": list("pqrst"), "created_at": day(-30), "amount": 1.0}), _history(rows))


def _snapshots(points: list[tuple[str, int]]) -> Snapshots:
    """Snapshots at the given (deal, day) points, in (deal, day) order as training keeps them."""
    points = sorted(set(points))
    frame = pd.DataFrame({"opportunity_id": pd.Categorical([p for p, _ in points]), "stage": pd.Categorical(["A"] * len(points), categories=["A", "B"])})
    time = np.array([day(d).value for _, d in points], dtype=np.int64)
    return Snapshots.at_times(frame, None, time, np.zeros(len(points), dtype=np.float32), 0)


HISTORY = st.lists(st.tuples(st.sampled_from("pqrs"), st.sampled_from(["A", "B", "W", "L"]), st.integers(0, 80)), max_size=30)
POINTS = st.lists(st.tuples(st.sampled_from("pqrst"), st.sampled_from(range(0, 80, 7))), min_size=1, max_size=25)


@settings(max_examples=80, deadline=None)
@given(rows=HISTORY, asked=POINTS, piece=st.integers(1, 12))
@example([("p", "W", 5), ("q", "W", 9)], [("p", 5), ("p", 0), ("q", 7), ("t", 0)], 1)  # a win at the snapshot's own time is not after it
def test_each_snapshots_first_win_is_found_as_the_history_says(rows, asked, piece) -> None:
    """Strictly after the snapshot, wins only, NO_WIN for a deal without one or without any
    history (t); the history read a few deals at a time (any piece size)."""
    from features import stays as stays_module

    tables = _tables(rows)
    snaps = _snapshots(asked)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stays_module, "CHUNK_ROWS", piece)
        wins = Wins(tables.stage_history, STAGES, snaps.ids)
    got = wins.first_after(snaps.deal, snaps.time)
    points = snaps.points(np.arange(len(snaps)))
    hist = tables.stage_history
    expected = []
    for deal, at in zip(points["opportunity_id"], points["as_of"], strict=True):
        later = hist[(hist["opportunity_id"] == deal) & (hist["stage"] == "W") & (hist["entered_at"] > at)]["entered_at"]
        expected.append(later.min().value if len(later) else NO_WIN)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(rows=HISTORY, later=HISTORY, asked=POINTS, at_day=st.integers(0, 80), horizon=st.sampled_from([7, 14, 30]))
def test_what_is_learned_at_a_date_is_unaffected_by_rows_after_it(rows, later, asked, at_day, horizon) -> None:
    """Point in time: the rows, labels and weights a fold trains on at a date are the same
    whatever the history holds after that date (`later` rows moved past it, wins among them)."""
    at = day(at_day)
    before = [(p, s, d) for p, s, d in rows if d <= at_day]
    after = before + [(p, s, at_day + 1 + d) for p, s, d in later]
    snaps = _snapshots(asked)
    end = day(200)
    one, _ = win_target(_tables(before), STAGES, snaps, end, horizon_days=horizon)
    two, _ = win_target(_tables(after), STAGES, snaps, end, horizon_days=horizon)
    a, b = one.train(at), two.train(at)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.y[a.w > 0], b.y[b.w > 0])


@settings(max_examples=80, deadline=None)
@given(rows=HISTORY, asked=POINTS, at_day=st.integers(0, 90), horizon=st.sampled_from([7, 14, 30]))
def test_a_fold_learns_the_contracts_label_from_snapshots_whose_horizon_has_passed(rows, asked, at_day, horizon) -> None:
    """At a date, the rows learned from are the snapshots at least H old, each with the
    contract's label as known then; evaluation at a date whose horizon passes the export's end
    is empty, and otherwise the contract's label at the end."""
    tables, snaps, at = _tables(rows), _snapshots(asked), day(at_day)
    end = day(120)
    target, _ = win_target(tables, STAGES, snaps, end, horizon_days=horizon)
    got = target.train(at)
    old_enough = np.flatnonzero(snaps.time + horizon * DAY_NS <= at.value)
    np.testing.assert_array_equal(got.index, old_enough)
    assert (got.w == 1).all()
    np.testing.assert_array_equal(got.y, won_within_label(tables, STAGES, snaps.points(got.index), horizon, at))
    rows_e, y_e, _ = target.evaluate(at)
    if at + pd.Timedelta(days=horizon) > end:
        assert len(rows_e) == 0
    else:
        np.testing.assert_array_equal(rows_e, np.flatnonzero(snaps.time == at.value))
        np.testing.assert_array_equal(y_e, won_within_label(tables, STAGES, snaps.points(rows_e), horizon, end))


def test_the_horizon_covers_most_wins_in_whole_weeks_and_half_the_span_at_most() -> None:
    """H: the days within which 90 % of the snapshots of deals won later saw the win, rounded
    up to the snapshot interval; in a young export, at most half its span of snapshots."""
    rows, points = [], []
    for k in range(40):  # deal k is snapshotted weekly from day 0 and won on day 7k + 3
        rows.append((f"d{k:02d}", "W", 7 * k + 3))
        points += [(f"d{k:02d}", 7 * j) for j in range(k + 1)]
    tables = Tables(pd.DataFrame({"opportunity_id": sorted({p for p, _ in points}), "created_at": day(-1), "amount": 1.0}), _history(rows))
    snaps = _snapshots(points)
    wins = Wins(tables.stage_history, STAGES, snaps.ids)
    h = win_horizon(snaps, wins, day(400), every_days=7)
    days = np.array([7 * k + 3 - 7 * j for k in range(40) for j in range(k + 1)], dtype=float)
    assert h.days % 7 == 0 and np.mean(days <= h.days) >= 0.9 and np.mean(days <= h.days - 7) < 0.9
    young = win_horizon(snaps, wins, day(290), every_days=7)
    assert young.days == 140 and "at most half" in young.why  # 290 days of snapshots from day 0: 145, in whole weeks
