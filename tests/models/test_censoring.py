"""Weights that undo the censoring of win labels (training.censoring): the close-time curve
learned from censored follow-up, the weights it gives, and that a fold's rows carry the
weight of their snapshot date."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.frame import make_spec
from features.pit_stats import PointInTimeStats
from features.settings import SegmentConfig, Settings
from features.stages import StageOrder
from features.times import DAY_NS
from training.backtest import win_target
from training.censoring import MIN_CLOSE_PROB, CloseTimeModel, win_weights
from training.labels import won_label
from training.snapshots import of_export

KNOWN_AT = pd.Timestamp("2026-01-01", tz="UTC")


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


def test_a_rows_weight_is_its_snapshot_dates_weight(small) -> None:
    """Labels are computed per deal and weights per snapshot date, then read by row: the same as
    weighing every row, labelled as DESIGN.md says (won/lost as known at the date)."""
    stages = StageOrder(small.stages)
    settings = Settings(segments=SegmentConfig(columns=small.segments))
    spec = make_spec(small.tables, stages, small.segments)
    snaps = of_export(small.tables, stages, settings, spec, PointInTimeStats(spec.stat_keys).fit(small.tables, stages))
    target = win_target(small.tables, stages, snaps, small.tables.end)
    grid = np.unique(snaps.time)
    for t in grid[[len(grid) // 2, -1]]:
        at = pd.Timestamp(int(t), tz="UTC")
        rows = target.train(at)
        assert rows.y.dtype == np.int8 and rows.w.dtype == np.float32
        y = won_label(small.tables, stages, snaps.points(rows.index), at)
        model = CloseTimeModel().fit(snaps.time[rows.index], snaps.close[rows.index], at)
        expected = np.where(np.isnan(y), 0.0, win_weights(model, snaps.time[rows.index], at))
        np.testing.assert_allclose(rows.w, expected, rtol=1e-6)
        np.testing.assert_array_equal(rows.y, np.nan_to_num(y))
        assert (rows.w > 0).any() and (rows.w == 0).any()
