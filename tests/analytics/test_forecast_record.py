"""The forecast follows its replayed record (issue 40): methods ordered by how their replayed
forecasts did, out of sample, and a method whose level moved since its last replay named."""

from __future__ import annotations

import pandas as pd

from analytics.forecast import actual_won
from analytics.forecast_record import MIN_REPLAYED, ReplayedRecord, level_moves
from features.stages import StageOrder


def _recorded(small, months: int, scale: dict[str, float], source: str = "replay") -> pd.DataFrame:
    """Replayed forecasts of the last `months` complete months: each method forecasts `scale`
    times what was won, with a P10–P90 of ±20 % around it."""
    stages = StageOrder(small.stages)
    end = small.tables.end
    last = pd.Period(end.tz_convert("UTC").tz_localize(None), freq="M") - 1
    rows = []
    for k in range(months):
        p = last - k
        start, stop = pd.Timestamp(p.start_time, tz="UTC"), pd.Timestamp((p + 1).start_time, tz="UTC")
        won = actual_won(small.tables, stages, (start, stop), start)
        for method, s in scale.items():
            rows.append({"made_at": end, "as_of": start, "period_start": start, "period_end": stop, "source": source, "model_version": "replay",
                         "method": method, "expected": s * won, "p10": 0.8 * s * won, "p50": s * won, "p90": 1.2 * s * won, "open_deals": 10})
    return pd.DataFrame(rows)


def test_methods_are_ordered_by_their_replayed_record_not_as_given(small) -> None:
    stages = StageOrder(small.stages)
    recorded = _recorded(small, MIN_REPLAYED, {"model": 0.1, "data-driven stage weights": 1.05, "configured weights": 2.5})
    record = ReplayedRecord.of(recorded, small.tables, stages, small.tables.end)
    assert record.enough and list(record.summary["method"]) == ["data-driven stage weights", "model", "configured weights"]
    now = pd.DataFrame({"method": ["model", "configured weights", "data-driven stage weights"], "expected": [1.0, 2.0, 3.0], "p10": 0.0, "p50": 1.0, "p90": 4.0})
    assert list(record.in_order(now)["method"]) == ["data-driven stage weights", "model", "configured weights"]
    assert "data-driven stage weights" in record.best()[0]


def test_too_few_replayed_periods_or_none_replayed_leave_the_order_alone(small) -> None:
    stages = StageOrder(small.stages)
    now = pd.DataFrame({"method": ["model", "configured weights"], "expected": [1.0, 2.0], "p10": 0.0, "p50": 1.0, "p90": 4.0})
    for recorded in (_recorded(small, MIN_REPLAYED - 1, {"model": 3.0, "configured weights": 1.0}),
                     _recorded(small, MIN_REPLAYED, {"model": 3.0, "configured weights": 1.0}, source="batch"),  # served, not replayed
                     pd.DataFrame()):
        record = ReplayedRecord.of(recorded, small.tables, stages, small.tables.end)
        assert not record.enough and record.best() == []
        assert list(record.in_order(now)["method"]) == ["model", "configured weights"]


def test_a_level_that_moved_past_its_last_replayed_range_is_named() -> None:
    month = (pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-05-31", tz="UTC"))
    last = pd.DataFrame({"method": ["model", "data-driven stage weights"], "as_of": month[0], "period_start": month[0], "period_end": month[1],
                         "expected": [148_000.0, 120_000.0], "p10": [100_000.0, 80_000.0], "p90": [200_000.0, 170_000.0]})
    june = (pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-06-30", tz="UTC"))  # as long as May's
    now = pd.DataFrame({"method": ["model", "data-driven stage weights"], "expected": [2_100.0, 130_000.0], "p10": 0.0, "p50": 0.0, "p90": 1.0})
    said = level_moves(now, june, last)
    assert len(said) == 1 and said[0].startswith("model: its level moved") and "2026-05-01" in said[0]
    quarter = (pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-08-30", tz="UTC"))  # three times as long: compared per day
    assert level_moves(now.assign(expected=[3 * 150_000.0, 3 * 118_000.0]), quarter, last) == []


def test_one_forecast_is_ordered_and_said_the_one_way_cli_and_page_share(small) -> None:
    """`ordered`: by the replayed record when it holds enough periods, today's backtest's verdict
    then labelled as such; by the backtest alone without a replayed record."""
    from analytics.forecast_record import ordered

    stages = StageOrder(small.stages)
    window = (pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-06-30", tz="UTC"))
    now = pd.DataFrame({"method": ["model", "configured weights", "data-driven stage weights"], "expected": [1.0, 2.0, 3.0], "p10": 0.0, "p50": 1.0, "p90": 4.0})
    summary = pd.DataFrame({"method": ["configured weights", "model", "data-driven stage weights"], "periods": 4, "mean_abs_error": [1.0, 2.0, 3.0],
                            "expected_over_actual": 1.0, "p10_p90_coverage": 0.5, "bias": 0.0, "mean_abs_pct_error": 0.1})
    record = ReplayedRecord.of(_recorded(small, MIN_REPLAYED, {"model": 0.1, "data-driven stage weights": 1.05, "configured weights": 2.5}), small.tables, stages, small.tables.end)
    by_record = ordered(now, window, summary, record)
    assert list(by_record.methods["method"]) == ["data-driven stage weights", "model", "configured weights"]
    assert by_record.best and all(line.startswith("in today's backtest: ") for line in by_record.backtest) and by_record.said[0] == by_record.best[0]
    by_backtest = ordered(now, window, summary, ReplayedRecord.of(pd.DataFrame(), small.tables, stages, small.tables.end))
    assert list(by_backtest.methods["method"]) == ["configured weights", "model", "data-driven stage weights"] and by_backtest.best == []
    assert by_backtest.backtest and not any(line.startswith("in today's backtest") for line in by_backtest.backtest)
