"""The array building blocks every feature rests on, checked against their plain definitions.

The features were moved from pandas operations to these (for the API's latency); each is
stated here as a property over random inputs, so a faster version cannot drift from what it
replaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.asof import Codebook, SortedRows, positions, take_array
from features.frame import model_matrix
from features.table_index import group_cumsum, group_starts

PROFILE = settings(max_examples=60, deadline=None)
times = st.integers(-(10**15), 10**15)


@PROFILE
@given(
    rows=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), max_size=40),
    queries=st.lists(st.tuples(st.integers(-1, 5), st.integers(-1, 7)), max_size=20),
    scale=st.sampled_from([1, 10**9, 86_400 * 10**9]),
)
def test_last_at_or_before_is_the_latest_row_not_after_the_query(rows, queries, scale) -> None:
    """Small time ranges on purpose: ties between rows, and queries exactly on a row's time."""
    keys = np.array([k for k, _ in rows], dtype=np.int64)
    row_times = np.array([t for _, t in rows], dtype=np.int64) * scale
    q_keys = np.array([k for k, _ in queries], dtype=np.int64)
    q_times = np.array([t for _, t in queries], dtype=np.int64) * scale
    got = SortedRows(keys, row_times).last_at_or_before(q_keys, q_times)
    for (qk, qt), g in zip(zip(q_keys, q_times, strict=True), got, strict=True):
        candidates = [i for i in range(len(rows)) if keys[i] == qk and row_times[i] <= qt]
        expected = max(candidates, key=lambda i: (row_times[i], i)) if candidates else -1
        assert g == expected


@PROFILE
@given(
    rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 6)), max_size=30),
    queries=st.lists(st.tuples(st.sampled_from(["a", "b", "z"]), st.integers(-1, 7)), max_size=15),
    direction=st.sampled_from(["backward", "forward"]),
    exact=st.booleans(),
)
def test_positions_is_the_as_of_join_written_as_a_loop(rows, queries, direction, exact) -> None:
    """The one-off as-of join (labels, first close after a snapshot) against its definition:
    backward, the last row of the key at or before the time (before it, when not exact);
    forward, the first at or after it (after it, when not exact). Ties: the last row given
    backward, the first forward."""
    keys = np.array([k for k, _ in rows], dtype=object)
    times = np.array([t for _, t in rows], dtype=np.int64)
    got = positions(keys, times, np.array([k for k, _ in queries], dtype=object), np.array([t for _, t in queries], dtype=np.int64), direction, exact)
    for (qk, qt), g in zip(queries, got, strict=True):
        if direction == "backward":
            hits = [i for i, (k, t) in enumerate(rows) if k == qk and (t <= qt if exact else t < qt)]
            expected = max(hits, key=lambda i: (rows[i][1], i)) if hits else -1
        else:
            hits = [i for i, (k, t) in enumerate(rows) if k == qk and (t >= qt if exact else t > qt)]
            expected = min(hits, key=lambda i: (rows[i][1], i)) if hits else -1
        assert g == expected


@PROFILE
@given(values=st.lists(st.one_of(st.sampled_from(["a", "b", "ß", "销售"]), st.integers(0, 3), st.none()), max_size=30),
       asked=st.lists(st.one_of(st.sampled_from(["a", "b", "z"]), st.integers(0, 5)), max_size=10))
def test_codebook_codes_each_distinct_value_once(values, asked) -> None:
    book = Codebook(np.array(values, dtype=object))
    present = [v for v in values if v is not None]
    assert len(book) == len(dict.fromkeys(present))
    codes = book.codes(np.array(asked, dtype=object))
    for value, code in zip(asked, codes, strict=True):
        assert (code == -1) == (value not in present)
        if code >= 0:
            assert book.values[code] == value
    # the rows' own codes point back at their values
    for value, code in zip(values, book.codes_of_rows, strict=True):
        assert (code == -1) if value is None else book.values[code] == value


def test_take_array_fills_only_the_misses() -> None:
    pos = np.array([2, -1, 0])
    assert take_array(np.array([10, 20, 30]), pos).tolist()[::2] == [30.0, 10.0]
    assert np.isnan(take_array(np.array([10, 20, 30]), pos)[1])
    assert take_array(np.array([10, 20, 30]), np.array([2, 0])).dtype == np.int64  # no miss: the type stays
    assert take_array(np.array(["x", "y", "z"], dtype=object), pos).tolist() == ["z", None, "x"]
    assert take_array(np.array([], dtype=object), np.array([-1])).tolist() == [None]


@PROFILE
@given(groups=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 1_000)), min_size=1, max_size=12), data=st.data())
def test_group_sums_restart_with_each_opportunity(groups, data) -> None:
    codes = np.concatenate([np.full(n, code) for n, code in groups])
    values = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(codes), max_size=len(codes))), dtype=np.int64)
    run = np.cumsum([True] + [codes[i] != codes[i - 1] for i in range(1, len(codes))])  # contiguous runs
    expected = pd.Series(values).groupby(run).cumsum().to_numpy()
    np.testing.assert_array_equal(group_cumsum(values, group_starts(codes)), expected)


def test_model_matrix_codes_levels_as_trained_and_unknowns_as_missing(trained, medium) -> None:
    """What every model reads: numbers as they are, a categorical as its code among the training
    levels; a level never seen in training and a stage that is not open are missing (NaN), a
    missing segment value is the (missing) level."""
    from features.frame import Points, feature_arrays, open_points
    from features.pit_stats import MISSING

    spec = trained.bundle.spec
    points = open_points(medium.tables, spec.stages, medium.tables.end)
    features = feature_arrays(medium.tables, Points.of(medium.tables, points), spec, trained.bundle.stats)
    column = spec.segment_columns[0]
    features[column] = features[column].copy()
    features[column][0], features[column][1] = "never seen", None
    features["stage"] = features["stage"].copy()
    features["stage"][2] = None
    matrix = model_matrix(features, spec)
    for j, col in enumerate(spec.columns):
        levels = spec.categories.get(col, [])
        for i, value in enumerate(features[col][:50]):
            got = matrix[i, j]
            if col not in spec.categorical:
                assert got == value or (np.isnan(got) and np.isnan(value))
            elif value is None:
                assert np.isnan(got) if col == "stage" else got == levels.index(MISSING)
            elif str(value) in levels:
                assert got == levels.index(str(value))
            else:
                assert np.isnan(got)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), keep=st.floats(0.02, 1.0), with_activities=st.booleans())
def test_tables_from_arrays_equal_tables_from_frames(small, seed, keep, with_activities) -> None:
    """A request arrives as arrays, a file as frames; whichever way tables are built, they hold
    the same rows in the same order and give features the same index. Rows come shuffled, as a
    request may list them."""
    from dataclasses import fields

    from features.table_index import FieldSteps
    from features.tables import TABLE_NAMES, Tables, columns_of

    rng = np.random.default_rng(seed)
    ids = small.tables.opportunities["opportunity_id"].to_numpy(dtype=object)
    sub = small.tables.subset(list(ids[rng.random(len(ids)) < keep]))
    frames = [f.sample(frac=1.0, random_state=seed).reset_index(drop=True) for f in (sub.opportunities, sub.stage_history, sub.activities, sub.field_history)]
    if not with_activities:
        frames[2] = frames[2].iloc[:0]
    from_frames = Tables(*frames)
    from_arrays = Tables.of_columns(*(columns_of(f, name) for f, name in zip(frames, TABLE_NAMES, strict=True)))
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(from_arrays.frame(name), from_frames.frame(name))
    for field in fields(from_frames.index):
        a, b = getattr(from_arrays.index, field.name), getattr(from_frames.index, field.name)
        if isinstance(a, FieldSteps):
            np.testing.assert_array_equal(a.rows.packed, b.rows.packed)
            for part in ("value", "first", "pushes", "pushed_days"):
                np.testing.assert_array_equal(getattr(a, part), getattr(b, part), err_msg=f"{field.name}.{part}")
        elif isinstance(a, SortedRows):
            np.testing.assert_array_equal(a.packed, b.packed)
            np.testing.assert_array_equal(a.order, b.order)
        elif isinstance(a, Codebook):
            assert a.values.tolist() == b.values.tolist()
        elif isinstance(a, dict):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a if a[k].dtype != object)
            assert all(a[k].tolist() == b[k].tolist() for k in a if a[k].dtype == object)
        else:
            np.testing.assert_array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object), err_msg=field.name)


@PROFILE
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["Prospecting", "Won", "é", ""])), max_size=30))
def test_shared_text_keeps_every_value_and_holds_each_once(values) -> None:
    """The first pass's memory saving must not change a cell: same values, missing stays None,
    still object text (what `Tables` joins on); equal values are one object."""
    from features.partitions import shared_text

    frame = pd.DataFrame({"stage": pd.Series([None if v is None else "".join(v) for v in values], dtype=object), "n": np.arange(len(values), dtype=float)})
    got = shared_text(frame)
    assert got["stage"].dtype == object and got["n"].equals(frame["n"])
    assert got["stage"].tolist() == frame["stage"].tolist()
    by_value = {}
    for v in got["stage"]:
        assert v is None or by_value.setdefault(v, v) is v
    other = pd.DataFrame({"stage": pd.Series([None if v is None else "".join(v) for v in values[::-1]] + ["other"], dtype=object)})
    shared = shared_text(other, like=got)  # another table's column of the same name: its objects where the values agree
    assert shared["stage"].tolist() == other["stage"].tolist()
    assert all(by_value[v] is v for v in shared["stage"] if v in by_value)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.just(float("nan")), st.text(max_size=3)), max_size=40), sort=st.booleans())
def test_the_small_factorize_codes_as_pandas_does(values, sort) -> None:
    """The dict path of `asof.factorize` (a request's few values) gives pandas' codes and uniques."""
    from features.asof import factorize

    codes, uniques = factorize(values, sort=sort)
    want_codes, want_uniques = pd.factorize(np.asarray(values, dtype=object), sort=sort)
    assert codes.tolist() == want_codes.tolist() and list(uniques) == list(want_uniques)
