"""The point-in-time statistics against their plain definition. They are stepped once a day
(a change counts from the end of its UTC day) and summed from pieces of the export (a Dask
first pass sends each partition's daily increments), so both are stated here: at any time t,
mid-day or midnight, from any split of the deals, a key value's win rate is the count of its
deals won and closed as they stood at t's midnight, and a stage's typical dwell the mean of
the stays completed by then."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.frame import make_spec
from features.pit_stats import GLOBAL, MISSING, PointInTimeStats
from features.stages import StageOrder
from features.stays import stays
from features.synthetic import generate
from features.tables import Tables

PROFILE = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pieces(tables: Tables, n: int, seed: int) -> list[Tables]:
    ids = tables.opportunities["opportunity_id"].to_numpy()
    where = np.random.default_rng(seed).integers(0, n, len(ids))
    return [tables.subset(list(ids[where == k])) for k in range(n)]


def _plain_counts(tables: Tables, stages: StageOrder, key: str, midnight: pd.Timestamp) -> pd.DataFrame:
    """Won and closed deals per key value, each deal as its last stage row at or before midnight left it."""
    hist = tables.stage_history
    known = hist[hist["entered_at"] <= midnight]
    last = known.groupby("opportunity_id", sort=False).tail(1)
    idx = stages.index(last["stage"])
    state = pd.DataFrame({"won": idx == stages.won_index, "closed": (idx == stages.won_index) | (idx < 0)}, index=last["opportunity_id"].to_numpy())
    opps = tables.opportunities.set_index("opportunity_id")
    value = pd.Series(GLOBAL, index=opps.index) if key == GLOBAL else opps[key].astype(object).where(opps[key].notna(), MISSING).astype(str)
    return state.groupby(value.reindex(state.index).to_numpy()).sum()


@PROFILE
@given(n=st.integers(20, 80), seed=st.integers(0, 10_000), pieces=st.integers(1, 4), frac=st.floats(0.2, 1.0), language=st.sampled_from(["en", "zh"]))
def test_rates_and_dwell_at_any_time_are_the_plain_counts_at_its_midnight(n, seed, pieces, frac, language) -> None:
    g = generate(n=n, seed=seed, stages=language)
    stages = StageOrder(g.stages)
    spec = make_spec(g.tables, stages, g.segments)
    parts = [PointInTimeStats(spec.stat_keys).increments(p, stages) for p in _pieces(g.tables, pieces, seed)]
    stats = PointInTimeStats(spec.stat_keys).fit_increments(pd.concat([w for w, _ in parts]), pd.concat([d for _, d in parts]))
    lo, hi = g.tables.opportunities["created_at"].min(), g.tables.end
    t = lo + (hi - lo) * frac
    midnight = t.floor("D")
    at = pd.Series([t])

    overall = _plain_counts(g.tables, stages, GLOBAL, midnight)
    won_all, closed_all = (overall.loc[GLOBAL, "won"], overall.loc[GLOBAL, "closed"]) if len(overall) else (0, 0)
    prior = (won_all + 1.0) / (closed_all + 2.0)
    np.testing.assert_allclose(stats.global_rate(at), [prior], rtol=1e-12)
    for key in spec.stat_keys:
        counts = _plain_counts(g.tables, stages, key, midnight)
        values = np.array([*counts.index, "never-seen"], dtype=object)
        won = np.array([*counts["won"], 0], dtype=float)
        closed = np.array([*counts["closed"], 0], dtype=float)
        expected = (won + stats.shrinkage * prior) / (closed + stats.shrinkage)
        np.testing.assert_allclose(stats.win_rate(key, values, pd.Series([t] * len(values))), expected, rtol=1e-12, err_msg=key)

    done = stays(g.tables.stage_history, stages, g.tables.end)
    done = done[done["done"] & done["open_stage"] & (done["ended_at"] <= midnight)]
    for stage in stages.open:
        logs = np.log1p(done.loc[done["stage"].astype(str) == stage, "days"].to_numpy())
        expected = np.expm1(logs.mean()) if len(logs) >= 5 else np.nan
        np.testing.assert_allclose(stats.typical_dwell(np.array([stage], dtype=object), at), [expected], rtol=1e-9, err_msg=stage)


def test_a_close_counts_from_the_end_of_its_day() -> None:
    """Closed at 15:00: not yet at 23:59 that day (a score then reads the day's start), counted at midnight."""
    g = generate(n=40, seed=5)
    stages = StageOrder(g.stages)
    hist = g.tables.stage_history
    closes = hist[stages.index(hist["stage"]) == stages.won_index]
    day = closes["entered_at"].iloc[0].floor("D")
    shifted = hist.assign(entered_at=hist["entered_at"].where(hist.index != closes.index[0], day + pd.Timedelta(hours=15)))
    tables = Tables(g.tables.opportunities, shifted, g.tables.activities, g.tables.field_history)
    stats = PointInTimeStats([]).fit(tables, stages)
    before, late, next_midnight = stats.global_rate(pd.Series([day + pd.Timedelta(hours=14), day + pd.Timedelta(hours=23, minutes=59), day + pd.Timedelta(days=1)]))
    assert before == late < next_midnight
