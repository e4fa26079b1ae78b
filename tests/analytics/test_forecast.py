"""Forecasts: ranges that cover what happened, methods side by side, nothing read after as_of."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.forecast import backtest, backtest_summary, forecast, methods_for, parse_period
from features.stages import StageOrder


def test_model_backtest_covers_the_actual_about_as_promised(trained, medium) -> None:
    stages = StageOrder(medium.stages)
    bt = backtest(medium.tables, stages, methods_for(stages, trained.bundle), periods=8, sims=1500)
    summary = backtest_summary(bt).set_index("method")
    assert set(summary.index) == {"configured weights", "data-driven stage weights", "model"}
    assert summary.loc["model", "p10_p90_coverage"] >= 0.6  # nominal 0.8, over 8 periods
    assert summary.loc["model", "mean_abs_pct_error"] < summary.loc["configured weights", "mean_abs_pct_error"]
    assert (bt["p10"] <= bt["expected"]).all() and (bt["expected"] <= bt["p90"]).all()


def test_forecast_reads_nothing_after_as_of(medium) -> None:
    stages = StageOrder(medium.stages)
    t = pd.Timestamp("2026-06-01T00:00:00Z")
    period = parse_period("2026-06", t)
    methods = methods_for(stages)
    full = forecast(medium.tables, stages, period, methods, as_of=t, sims=500)
    cut = forecast(medium.tables.as_of(t, stages), stages, period, methods, as_of=t, sims=500)
    pd.testing.assert_frame_equal(full.methods, cut.methods)


def test_periods_parse_and_bad_ones_are_named() -> None:
    now = pd.Timestamp("2026-09-01T00:00:00Z")
    assert parse_period("2026-10", now)[0] == pd.Timestamp("2026-10-01T00:00:00Z")
    assert parse_period("2026Q4", now)[1] == pd.Timestamp("2027-01-01T00:00:00Z")
    start, end = parse_period("next-30d", pd.Timestamp("2026-09-01T00:00:00Z"))
    assert end - start == pd.Timedelta(days=30)
    import pytest

    with pytest.raises(ValueError, match="--period: found '2026-13'"):
        parse_period("2026-13", now)


def test_a_forecast_is_the_same_in_every_process() -> None:
    """Found by the layout's before/after comparison: the simulation drew its random numbers
    in the order of a Python set, which changes with PYTHONHASHSEED, so the same command gave
    another forecast in another process."""
    import os
    import subprocess
    import sys

    code = (
        "from features.synthetic import generate; from features.stages import StageOrder; "
        "from analytics.forecast import forecast, methods_for, parse_period; "
        "g = generate(n=400, seed=3, stages='zh'); s = StageOrder(g.stages); t = g.tables.end; "
        "print(forecast(g.tables, s, parse_period('2026-10', t), methods_for(s), as_of=t, sims=300).methods.to_json())"
    )
    runs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": h}, capture_output=True, text=True, check=True).stdout for h in ("1", "2", "3")}
    assert len(runs) == 1 and "expected" in runs.pop()


def test_timing_pools_are_bounded_and_a_loaded_timing_draws_as_the_fitted_one() -> None:
    """Past `max_pool` won stays a pool keeps evenly spaced ones along its sorted lengths (the
    shortest and the longest among them), so a bundle's timing does not grow with the export;
    the pools and the pool of last resort read back from the bundle's frame are the fitted ones,
    and both draw the same days to a win."""
    import numpy as np

    from analytics.forecast import TimeToWin
    from features.synthetic import generate

    g = generate(800, seed=3)
    stages = StageOrder(g.stages)
    whole = TimeToWin().fit(g.tables, stages, g.tables.end)
    small = TimeToWin(max_pool=25).fit(g.tables, stages, g.tables.end)
    assert max(len(p[0]) for p in whole.pools_.values()) > 25, "the export has pools to thin"
    for key, (days, to_win) in small.pools_.items():
        full_days, full_to_win = whole.pools_[key]
        assert len(days) == min(25, len(full_days))
        assert days[0] == full_days[0] and days[-1] == full_days[-1] and (np.diff(days) >= 0).all()
        pairs = set(zip(full_days.tolist(), full_to_win.tolist(), strict=True))
        assert all(pair in pairs for pair in zip(days.tolist(), to_win.tolist(), strict=True))  # stays as they were, never mixed
    for fitted in (whole, small):
        loaded = TimeToWin.from_frame(fitted.to_frame())
        assert loaded.pools_.keys() == fitted.pools_.keys()
        for key in fitted.pools_:
            for a, b in zip(loaded.pools_[key], fitted.pools_[key], strict=True):
                np.testing.assert_array_equal(a, b)
        for a, b in zip(loaded.all_, fitted.all_, strict=True):
            np.testing.assert_array_equal(a, b)
        stage = np.array([stages.open[0]] * 3 + ["(unseen)"])
        dwell, amount = np.array([0.0, 5.0, 40.0, 3.0]), np.array([1e3, 5e4, 2e5, 1e4])
        drawn = [t.sample(stage, dwell, amount, np.random.default_rng(0), 50) for t in (fitted, loaded)]
        np.testing.assert_array_equal(*drawn)


@settings(max_examples=60, deadline=None)
@given(
    known=st.dictionaries(st.text(min_size=1, max_size=4), st.floats(allow_nan=True, allow_infinity=False, width=32), max_size=30),
    asked=st.lists(st.text(min_size=1, max_size=4), max_size=30),
)
def test_the_timing_finds_each_deals_amount_as_a_lookup_by_id_would(known, asked) -> None:
    """The timing looks won stays' amounts up by binary search in the opportunities sorted once
    (no hash table of millions of ids): any order of the opportunities, ids it lacks (NaN) and
    ids asked for again give what a lookup by id gives."""
    import numpy as np

    from analytics.forecast import _Amounts

    opps = pd.DataFrame({"opportunity_id": list(known)[::-1], "amount": list(known.values())[::-1]}, dtype=object).astype({"amount": float})
    asked = np.array(asked + list(known)[:3], dtype=object)
    expected = pd.Series(asked, dtype=object).map(opps.set_index("opportunity_id")["amount"]).to_numpy(dtype=float)
    np.testing.assert_array_equal(_Amounts(opps)(asked), expected)
