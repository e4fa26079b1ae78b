"""Weights that undo the censoring of the recorded outcome (training.censoring), what the
candidates trained on recorded outcomes learn from: the close-time curve learned from censored
follow-up, the weights it gives, and that a fold's rows carry the weight of their snapshot date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.frame import make_spec
from features.pit_stats import PointInTimeStats
from features.settings import SegmentConfig, Settings, StageConfig
from features.stages import StageOrder
from features.times import DAY_NS
from training.censoring import MIN_CLOSE_PROB, CloseTimeModel, win_weights
from training.labelled_snapshots import of_export
from training.labels import NO_WIN, Entries, win_target

KNOWN_AT = pd.Timestamp("2026-01-01", tz="UTC")


def _first_close(history: pd.DataFrame, stages: StageOrder, points: pd.DataFrame) -> np.ndarray:
    """What DESIGN.md's censoring reads, by pandas alone: each point's first won or lost stage
    entered strictly after its as_of (ns), NO_WIN where none."""
    closes = history[history["stage"].isin([stages.config.won, stages.config.lost])].sort_values("entered_at").astype({"opportunity_id": object, "entered_at": "datetime64[ns, UTC]"})
    queries = points.reset_index(drop=True).rename_axis("row").reset_index().sort_values("as_of").astype({"opportunity_id": object, "as_of": "datetime64[ns, UTC]"})
    found = pd.merge_asof(queries, closes.rename(columns={"entered_at": "close"}), left_on="as_of", right_on="close", by="opportunity_id", direction="forward", allow_exact_matches=False)
    close = found.sort_values("row")["close"]
    return np.where(close.isna(), NO_WIN, close.fillna(pd.Timestamp(0, tz="UTC")).to_numpy(dtype="datetime64[ns]").view(np.int64))


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from("pqrs"), st.sampled_from(["A", "B", "W", "L"]), st.integers(0, 40)), max_size=30),
    asked=st.lists(st.tuples(st.sampled_from("pqrst"), st.integers(-2, 42)), min_size=1, max_size=20),
    piece=st.integers(1, 12),
)
@example([("p", "W", 5), ("p", "L", 5), ("q", "W", 9)], [("p", 5), ("p", 4), ("q", 9), ("t", 0)], 1)  # a close at the snapshot's own time is not after it
def test_each_snapshots_first_close_is_found_when_asked_as_the_history_says(rows, asked, piece) -> None:
    """The censoring model reads the first close after each sampled snapshot, found then from
    each deal's closes (read a few deals at a time: any piece size) rather than kept for every
    snapshot: strictly after the snapshot, won or lost alike, NO_WIN for a deal that has none
    or no history at all (t)."""
    from features import stays as stays_module
    from features.tables import Tables

    stages = StageOrder(StageConfig(open=["A", "B"], won="W", lost="L"))
    ids, names, days = zip(*rows, strict=True) if rows else ((), (), ())

    def day(d: int) -> pd.Timestamp:
        return pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=d)

    hist = pd.DataFrame({"opportunity_id": pd.Series(ids, dtype=object), "stage": pd.Series(names, dtype=object), "entered_at": pd.Series([day(d) for d in days], dtype="datetime64[ns, UTC]")})
    opps = pd.DataFrame({"opportunity_id": list("pqrst"), "created_at": day(-30), "amount": 1.0})
    tables = Tables(opps, hist)
    snapshot_ids = np.array(sorted({a for a, _ in asked}), dtype=object)
    points = pd.DataFrame({"opportunity_id": pd.Series([a for a, _ in asked], dtype=object), "as_of": [day(d) for _, d in asked]})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stays_module, "CHUNK_ROWS", piece)
        closes = Entries(tables.stage_history, snapshot_ids, [stages.config.won, stages.config.lost])
    deal = pd.Index(snapshot_ids).get_indexer(points["opportunity_id"]).astype(np.int32)
    got = closes.first_after(deal, points["as_of"].to_numpy(dtype="datetime64[ns]").view(np.int64))
    np.testing.assert_array_equal(got, _first_close(tables.stage_history, stages, points))


def test_the_close_time_curve_survives_censoring(seed: int) -> None:
    """Deals closing after an exponential 30 days, followed up for 0–120 days: the Kaplan–Meier
    curve recovers P(closed within d days) although most late closes were never seen."""
    rng = np.random.default_rng(seed)
    n = 20_000
    as_of = KNOWN_AT.value - (rng.uniform(0, 120, n) * DAY_NS).astype(np.int64)
    close = as_of + (rng.exponential(30, n) * DAY_NS).astype(np.int64)
    model = CloseTimeModel().fit(as_of, close, KNOWN_AT)
    days = np.array([7.0, 30.0, 60.0])
    np.testing.assert_allclose(model.close_prob(days), 1 - np.exp(-days / 30), atol=0.02)
    seen = (close <= KNOWN_AT.value).mean()
    naive = ((close - as_of) <= 60 * DAY_NS)[close <= KNOWN_AT.value].mean()  # among seen closes only: biased toward fast deals
    assert seen < 0.8 and naive > 1 - np.exp(-2) + 0.03


def test_weights_undo_the_close_probability_and_drop_short_follow_up() -> None:
    as_of = KNOWN_AT.value - np.array([1, 20, 60, 400]) * DAY_NS
    close = KNOWN_AT.value - np.array([0, 5, 30, 390]) * DAY_NS
    model = CloseTimeModel().fit(as_of, close, KNOWN_AT)
    p = model.close_prob((KNOWN_AT.value - as_of) / DAY_NS)
    w = win_weights(model, as_of, KNOWN_AT)
    np.testing.assert_allclose(w[p >= MIN_CLOSE_PROB], 1 / p[p >= MIN_CLOSE_PROB])
    assert (w[p < MIN_CLOSE_PROB] == 0).all() and w[-1] == 1.0


def _won_label(tables, stages: StageOrder, points: pd.DataFrame, known_at: pd.Timestamp) -> np.ndarray:
    """The recorded outcome by pandas alone: won 1, lost 0 as the deal's last stage entered by
    `known_at` says, anything else unknown."""
    from features.stays import final_states

    outcome = points["opportunity_id"].map(final_states(tables.stage_history[tables.stage_history["entered_at"] <= known_at], stages)["state"])
    return np.where(outcome == "won", 1.0, np.where(outcome == "lost", 0.0, np.nan))


def test_a_rows_weight_is_its_snapshot_dates_weight(small) -> None:
    """Recorded outcomes are computed per deal and weights per snapshot date, then read by row:
    the same as weighing every row, labelled won/lost as known at the date."""
    stages = StageOrder(small.stages)
    settings = Settings(segments=SegmentConfig(columns=small.segments))
    spec = make_spec(small.tables, stages, small.segments)
    snaps = of_export(small.tables, stages, settings, spec, PointInTimeStats(spec.stat_keys).fit(small.tables, stages))
    target, _ = win_target(small.tables, stages, snaps, small.tables.end)
    grid = np.unique(snaps.time)
    for t in grid[[len(grid) // 2, -1]]:
        at = pd.Timestamp(int(t), tz="UTC")
        rows = target.recorded(at)
        assert rows.y.dtype == np.int8 and rows.w.dtype == np.float32
        y = _won_label(small.tables, stages, snaps.points(rows.index), at)
        model = CloseTimeModel().fit(snaps.time[rows.index], _first_close(small.tables.stage_history, stages, snaps.points(rows.index)), at)
        expected = np.where(np.isnan(y), 0.0, win_weights(model, snaps.time[rows.index], at))
        np.testing.assert_allclose(rows.w, expected, rtol=1e-6)
        np.testing.assert_array_equal(rows.y, np.nan_to_num(y))
        assert (rows.w > 0).any() and (rows.w == 0).any()
