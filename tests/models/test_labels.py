"""Labels exactly as DESIGN.md defines them, on a hand-worked fixture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.settings import StageConfig
from features.stages import StageOrder
from features.tables import Tables
from tests.models.label_definitions import won_within_label
from training import targets  # imported once here, not inside a property test's first, timed example
from training.labels import stalled_label

STAGES = StageOrder(StageConfig(open=["A", "B", "C"], won="W", lost="L"))
T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


def _tables() -> Tables:
    opps = pd.DataFrame({"opportunity_id": ["p", "q", "r"], "created_at": [T("2025-01-01")] * 3, "amount": [1.0] * 3})
    hist = pd.DataFrame(
        {
            "opportunity_id": ["p", "p", "p", "q", "q", "r", "r", "r"],
            "stage": ["A", "B", "W", "A", "L", "A", "B", "A"],
            "entered_at": [T("2025-01-01"), T("2025-01-20"), T("2025-03-01"), T("2025-01-01"), T("2025-02-10"),
                           T("2025-01-01"), T("2025-01-05"), T("2025-01-25")],
        }
    )
    return Tables(opps, hist)


def test_won_within_label_as_known_then() -> None:
    """p won on Mar 1; q lost on Feb 10 (never a win); r open, back in A."""
    points = pd.DataFrame({"opportunity_id": ["p", "q", "r", "p"], "as_of": [T("2025-01-08")] * 3 + [T("2025-02-20")]})
    # at Feb 15: 30 days after Jan 8 have passed, p's win is later still; the Feb 20 horizon has not passed
    np.testing.assert_array_equal(won_within_label(_tables(), STAGES, points, 30, T("2025-02-15")), [0.0, 0.0, 0.0, np.nan])
    # at Mar 5: p@Feb 20 was won within 30 days (Mar 1); p@Jan 8 was not (52 days later)
    np.testing.assert_array_equal(won_within_label(_tables(), STAGES, points, 30, T("2025-03-05")), [0.0, 0.0, 0.0, 1.0])
    # a 60-day horizon: p@Jan 8 counts as won; known once the win is, before its horizon ends
    np.testing.assert_array_equal(won_within_label(_tables(), STAGES, points, 60, T("2025-03-05")), [1.0, np.nan, np.nan, 1.0])


def test_stalled_label() -> None:
    points = pd.DataFrame(
        {"opportunity_id": ["p", "p", "q", "r", "r"], "as_of": [T("2025-01-08"), T("2025-01-25"), T("2025-01-08"), T("2025-01-08"), T("2025-01-08")]}
    )
    got = stalled_label(_tables(), STAGES, points, horizon_days=30, known_at=T("2025-06-01"))
    # p@Jan 8 in A: entered B on Jan 20 → progressed. p@Jan 25 in B: won on Mar 1, 35 days later → stalled.
    # q@Jan 8: lost within the window, never a later stage → stalled. r@Jan 8 in B: moved back to A → stalled.
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0, 1.0, 1.0])


def test_stall_horizon_past_the_cutoff_is_unlabelled() -> None:
    points = pd.DataFrame({"opportunity_id": ["p"], "as_of": [T("2025-01-25")]})
    assert np.isnan(stalled_label(_tables(), STAGES, points, horizon_days=30, known_at=T("2025-02-10"))[0])


@given(values=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=30), known=st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_codes_looked_up_by_run_are_every_rows_code(values: list[str], known: set[str]) -> None:
    """Wins look a deal up once per run of its rows; runs in any order, ids not among the
    snapshots' (-1), and a deal in two runs all give each row its own code."""
    from training.labels import _codes_by_run

    categories = np.array(sorted(known), dtype=object)
    got = _codes_by_run(np.array(values, dtype=object), categories)
    np.testing.assert_array_equal(got, pd.Categorical(np.array(values, dtype=object), categories=categories).codes)


def test_snapshot_ids_can_be_the_opportunities_own_strings_and_hash_as_text() -> None:
    """At 3M deals the snapshots' ids, made from their categories, are 3M new strings the
    opportunities table already holds: shared, they are its objects, in the same order; a deal
    the table lacks leaves them as they were."""
    from training.labelled_snapshots import Snapshots

    ids = ["b-2", "a-1", "c-3"]
    frame = pd.DataFrame({"opportunity_id": pd.Categorical(["a-1", "a-1", "b-2", "c-3"])})
    snaps = Snapshots.at_times(frame, None, np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.float32), 0)
    opportunities = pd.Series(["".join(i) for i in ids + ["d-4"]], dtype=object)  # new objects, not the literals
    snaps.share_ids(opportunities)
    assert snaps.ids.tolist() == ["a-1", "b-2", "c-3"]
    assert all(any(v is o for o in opportunities) for v in snaps.ids)
    other = Snapshots.at_times(frame, None, np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.float32), 0)
    other.share_ids(opportunities[opportunities != "c-3"])
    assert other.ids.tolist() == ["a-1", "b-2", "c-3"]
    # the samples of whole deals hash the ids as they are: the same values as hashing them as text
    text = pd.util.hash_pandas_object(pd.Series(other.ids, dtype=object).astype(str), index=False).to_numpy()
    np.testing.assert_array_equal(other.hashes, text)


@given(mask=st.lists(st.booleans(), max_size=60), step=st.integers(1, 9))
def test_row_index_read_piece_by_piece_is_every_row_where_the_mask_holds(mask, step) -> None:
    """The rows of a fold are found a piece of the mask at a time and held as int32: any piece
    size gives the rows `np.flatnonzero` gives."""

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(targets, "ROW_INDEX_STEP", step)
        rows = targets.row_index(np.array(mask, dtype=bool))
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, np.flatnonzero(mask))


@given(rows=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1), st.sampled_from([0.0, 0.5, 1.0])), max_size=40))
def test_labelled_rows_count_deals_of_each_outcome_as_fitted_rows_do(rows) -> None:
    """The backtest decides whether a fold date teaches by deals of each outcome, counted by
    marking deal codes: the same count as the fitted rows' own (distinct deals, used rows only)."""
    from training.fitting import Rows
    from training.targets import Labelled

    deal, y, w = (np.array(v) for v in zip(*rows, strict=True)) if rows else (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    labelled = Labelled(np.arange(len(rows), dtype=np.int32), y.astype(np.int8), w.astype(np.float32), deal.astype(np.int32), np.array(list("abcdef"), dtype=object), np.zeros(6, dtype=np.uint64))
    assert labelled.deals_of_each_outcome() == Rows(np.zeros((len(rows), 0)), y.astype(float), w, deal).deals_of_each_outcome()
