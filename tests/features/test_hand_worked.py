"""Features of a tiny hand-written export, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.frame import build_features, make_spec
from features.pit_stats import PointInTimeStats
from features.settings import StageConfig
from features.stages import StageOrder
from features.tables import Tables

STAGES = StageOrder(StageConfig(open=["A", "B", "C"], won="W", lost="L"))
T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


@pytest.fixture()
def tiny() -> Tables:
    opps = pd.DataFrame(
        {
            "opportunity_id": ["x", "y", "z"],
            "created_at": [T("2025-01-01"), T("2025-01-01"), T("2025-01-01")],
            "amount": [999.0, 10.0, 10.0],
            "owner_id": ["r1", "r1", "r1"],
            "region": ["north", "north", "south"],
        }
    )
    hist = pd.DataFrame(
        {
            "opportunity_id": ["x", "x", "x", "x", "y", "y", "z", "z", "z"],
            "stage": ["A", "B", "A", "C", "A", "W", "A", "L", "B"],
            "entered_at": [T("2025-01-01"), T("2025-01-11"), T("2025-01-15"), T("2025-01-21"),
                           T("2025-01-01"), T("2025-01-05"), T("2025-01-01"), T("2025-01-03"), T("2025-01-20")],
        }
    )
    acts = pd.DataFrame(
        {
            "opportunity_id": ["x"] * 4,
            "occurred_at": [T("2024-12-20"), T("2025-01-10"), T("2025-01-25"), T("2025-02-05")],
            "type": ["Call", "email", "call", "call"],
            "direction": ["inbound", "outbound", "inbound", "outbound"],
            "contact_id": ["c1", "c2", "c1", "c3"],
        }
    )
    return Tables(opps, hist, acts)


def test_hand_worked_features(tiny: Tables) -> None:
    spec = make_spec(tiny, STAGES, ["region"])
    stats = PointInTimeStats(spec.stat_keys, shrinkage=2.0).fit(tiny, STAGES)
    points = pd.DataFrame({"opportunity_id": ["x"], "as_of": [T("2025-01-31")]})
    row = build_features(tiny, points, spec, stats).iloc[0]
    assert row["stage"] == "C"
    assert row["stage_progress"] == 1.0
    assert row["days_in_stage"] == 10.0
    assert row["age_days"] == 30.0
    assert row["stage_changes"] == 3 and row["moves_back"] == 1
    assert row["furthest_progress"] == 1.0
    assert row["activities_7d"] == 1 and row["activities_30d"] == 2 and row["activities_90d"] == 3
    assert row["call_90d"] == 2  # types are case-folded: "Call" and "call"
    assert row["days_since_activity"] == 6.0
    assert row["days_since_inbound"] == 6.0
    assert row["inbound_share"] == pytest.approx(2 / 3)
    assert row["distinct_contacts"] == 2  # c3 comes after as_of
    # at Jan 31: y won (Jan 5); z lost Jan 3 but re-opened Jan 20, so it no longer counts as closed
    prior = (1 + 1) / (1 + 2)  # Beta(1, 1) on one win out of one close
    assert row["win_rate_owner_id"] == pytest.approx((1 + 2 * prior) / (1 + 2))
    # north: y won; x is open
    assert row["win_rate_region"] == pytest.approx((1 + 2 * prior) / (1 + 2))
    assert row["log_amount"] == pytest.approx(np.log1p(999.0))


def test_before_the_reopen_the_loss_counts(tiny: Tables) -> None:
    spec = make_spec(tiny, STAGES, ["region"])
    stats = PointInTimeStats(spec.stat_keys, shrinkage=2.0).fit(tiny, STAGES)
    when = pd.Series([T("2025-01-10")])
    prior = stats.global_rate(when)
    assert prior[0] == pytest.approx((1 + 1) / (2 + 2))  # y won, z lost
    rate = stats.win_rate("region", pd.Series(["south"]), when, prior)
    assert rate[0] == pytest.approx((0 + 2 * 0.5) / (1 + 2))


def test_statistics_travel_without_their_index_and_answer_the_same(small) -> None:
    """Sent to every Dask worker (pickled), the statistics carry their step tables only and
    build the lookup index again on arrival: the same answers, at any time and for unseen values."""
    import pickle

    stages = StageOrder(small.stages)
    spec = make_spec(small.tables, stages, small.segments)
    stats = PointInTimeStats(spec.stat_keys).fit(small.tables, stages)
    assert not {"_win", "_dwell"} & set(stats.__getstate__())
    back = pickle.loads(pickle.dumps(stats))
    opps = small.tables.opportunities
    rng = np.random.default_rng(5)
    at = opps["created_at"].iloc[rng.integers(0, len(opps), 400)].reset_index(drop=True) + pd.to_timedelta(rng.integers(-30, 400, 400), unit="D")
    for key in spec.stat_keys:
        values = np.append(opps[key].to_numpy(dtype=object)[rng.integers(0, len(opps), 399)], "never seen")
        np.testing.assert_array_equal(back.win_rate(key, values, at), stats.win_rate(key, values, at))
    stage = rng.choice(np.array([*stages.open, "not a stage"], dtype=object), 400)
    np.testing.assert_array_equal(back.typical_dwell(stage, at), stats.typical_dwell(stage, at))
    np.testing.assert_array_equal(back.global_rate(at), stats.global_rate(at))
