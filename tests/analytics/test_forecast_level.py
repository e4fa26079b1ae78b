"""A forecast's range carries the level of its period, which moves for every deal at once, as
well as each deal's own chance; measured on the export's past months, as known at the date."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analytics.forecast import SPREAD_PRIOR, level_spread, simulate
from analytics.forecast_record import range_said
from features.stages import StageOrder
from features.tables import Tables


def test_a_moving_level_widens_the_range_and_keeps_its_middle(seed) -> None:
    rng = np.random.default_rng(seed)
    n, sims = 400, 4000
    amount, p = rng.uniform(1e3, 5e4, n), rng.beta(2, 8, n)
    remaining = np.full((n, sims), 5.0)  # every win lands inside the period
    still = simulate(amount, p, remaining, 0, 30, np.random.default_rng(seed + 1))
    moving = simulate(amount, p, remaining, 0, 30, np.random.default_rng(seed + 1), spread=0.5)
    width = lambda t: np.quantile(t, 0.9) - np.quantile(t, 0.1)  # noqa: E731
    assert width(moving) > 1.5 * width(still)
    assert abs(moving.mean() - still.mean()) < 0.05 * still.mean()  # a shift on the log-odds, both ways
    assert abs(still.mean() - (amount * p).sum()) < 0.02 * (amount * p).sum()


def test_the_spread_is_measured_on_months_as_known_then_and_held_by_a_prior(medium) -> None:
    stages = StageOrder(medium.stages)
    t = pd.Timestamp("2026-06-01T00:00:00Z")
    measured = level_spread(medium.tables, stages, t)
    assert measured == level_spread(medium.tables.as_of(t, stages), stages, t)  # nothing after t
    assert measured["months"] >= 6 and measured["measured"] is not None
    low, high = sorted((SPREAD_PRIOR, measured["measured"]))
    assert low - 1e-12 <= measured["spread"] <= high + 1e-12  # between what the months say and the prior
    open_only = Tables(medium.tables.opportunities.iloc[:0], medium.tables.stage_history.iloc[:0])
    alone = level_spread(open_only, stages, t)
    assert alone == {"spread": SPREAD_PRIOR, "months": 0, "measured": None}
    assert "no two months to measure it on: the prior" in range_said(alone)[0]
    assert f"measured over {measured['months']} months" in range_said(measured)[0]


def test_a_forecast_of_open_deals_alone_carries_the_prior(trained, medium) -> None:
    """A request sends its open deals only (the timing is the bundle's): no past month can be
    measured on them, so the range carries the prior, and no month is read."""
    from analytics.forecast import TimeToWin, forecast, methods_for, parse_period

    stages = StageOrder(medium.stages)
    t = pd.Timestamp("2026-06-01T00:00:00Z")
    timing = TimeToWin.from_frame(trained.bundle.timing)
    made = forecast(medium.tables.as_of(t, stages), stages, parse_period("2026-06", t), methods_for(stages), as_of=t, sims=200, timing=timing)
    assert made.level == {"spread": SPREAD_PRIOR, "months": 0, "measured": None}
