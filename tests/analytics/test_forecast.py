"""Forecasts: ranges that cover what happened, methods side by side, nothing read after as_of."""

from __future__ import annotations

import pandas as pd

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
