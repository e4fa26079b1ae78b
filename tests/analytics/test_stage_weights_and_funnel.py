"""Stage weights and funnel: hand-computed values, interval coverage, point in time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.forecast import TimeToWin
from analytics.funnel import funnel
from analytics.stage_weights import StageWeights
from features import stays as stays_module
from features.settings import StageConfig
from features.stages import StageOrder
from features.tables import Tables
from tests.features.test_point_in_time import PROFILE, _scenario, _t, exports

STAGES = StageOrder(StageConfig(open=["A", "B"], won="W", lost="L", configured_weights=[0.2, 0.6]))
T = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731


def _tiny() -> Tables:
    # x: A→B→W   y: A→L   z: A→B→L   w: A→B (open)   v: A→L→A→W (won back)
    rows = [("x", "A", "01"), ("x", "B", "05"), ("x", "W", "20"), ("y", "A", "01"), ("y", "L", "10"),
            ("z", "A", "02"), ("z", "B", "08"), ("z", "L", "25"), ("w", "A", "03"), ("w", "B", "06"),
            ("v", "A", "01"), ("v", "L", "04"), ("v", "A", "12"), ("v", "W", "18")]
    hist = pd.DataFrame([(o, s, T(f"2025-03-{d}")) for o, s, d in rows], columns=["opportunity_id", "stage", "entered_at"])
    opps = pd.DataFrame({"opportunity_id": list("xyzwv"), "created_at": T("2025-03-01"), "amount": 100.0,
                         "loss_reason": [None, "price", "timing", None, None], "source": ["web", "web", "ref", "ref", "web"]})
    return Tables(opps, hist)


def test_stage_weights_by_hand() -> None:
    sw = StageWeights(["source"], shrinkage=2.0).fit(_tiny(), STAGES, T("2025-04-01"))
    w = sw.weights_.set_index("stage")
    # A: reached by x, y, z, v (closed; w is open) → won x, v: 2/4.  B: x, z → 1/2
    assert (w.loc["A", "n"], w.loc["A", "won"], w.loc["A", "weight"]) == (4, 2, 0.5)
    assert (w.loc["B", "n"], w.loc["B", "won"], w.loc["B", "weight"]) == (2, 1, 0.5)
    assert w.loc["A", "configured"] == 0.2 and w.loc["A", "low"] < 0.5 < w.loc["A", "high"]
    seg = sw.by_segment_.set_index(["stage", "value"])
    # A, web: x, y, v → 2 won of 3, shrunk toward 0.5 with strength 2
    assert seg.loc[("A", "web"), "weight"] == (2 + 2 * 0.5) / (3 + 2)
    dwell = sw.by_dwell_[sw.by_dwell_["stage"] == "A"]
    assert dwell["weight"].dropna().is_monotonic_decreasing and dwell["weight"].iloc[0] == 0.5  # empty buckets: NaN


def test_stage_weights_as_of_an_earlier_time() -> None:
    sw = StageWeights().fit(_tiny(), STAGES, T("2025-03-15"))
    w = sw.weights_.set_index("stage")
    # by Mar 15: y lost (Mar 10); v was lost Mar 4 but re-opened Mar 12 (open again); x, z open
    assert (w.loc["A", "n"], w.loc["A", "won"]) == (1, 0)


def test_funnel_by_hand() -> None:
    f = funnel(_tiny(), STAGES, T("2025-04-01"), segments=["source"])
    conv = f.conversion.set_index("stage")
    # A reached by all five; moved on (a later stage or won): x, z, w, v → 4/5
    assert (conv.loc["A", "reached"], conv.loc["A", "moved_on"]) == (5, 4)
    assert (conv.loc["B", "reached"], conv.loc["B", "moved_on"]) == (3, 1)
    loss = f.loss_reasons.set_index(["stage", "loss_reason"])["deals"]
    assert loss[("A", "price")] == 1 and loss[("B", "timing")] == 1
    assert f.reopened.to_dict("records") == [{"opportunity_id": "v", "outcome": "won"}]
    seg = f.by_segment[f.by_segment["segment"] == "source"].set_index("value")
    assert seg.loc["web", "closed"] == 3 and seg.loc["web", "won"] == 2


def test_intervals_cover_the_true_rate_at_about_their_level() -> None:
    """Deals that reach stage A and win with a known probability; 90 % intervals over many draws."""
    rng = np.random.default_rng(0)
    truth, covered, runs = 0.3, 0, 200
    for _ in range(runs):
        n = 60
        won = rng.random(n) < truth
        ids = [f"o{i}" for i in range(n)]
        hist = pd.DataFrame({"opportunity_id": ids * 2, "stage": ["A"] * n + list(np.where(won, "W", "L")),
                             "entered_at": [T("2025-01-01")] * n + [T("2025-02-01")] * n})
        opps = pd.DataFrame({"opportunity_id": ids, "created_at": T("2025-01-01"), "amount": 1.0})
        row = StageWeights().fit(Tables(opps, hist), STAGES, T("2025-03-01")).weights_.iloc[0]
        covered += row["low"] <= truth <= row["high"]
    assert 0.84 <= covered / runs <= 0.96


@PROFILE
@given(data=st.data(), g=exports())
def test_weights_and_funnel_ignore_rows_after_t(data, g) -> None:
    stages, t, _, changed = _scenario(data, g)
    a, b = StageWeights(["source"]).fit(g.tables, stages, t), StageWeights(["source"]).fit(changed, stages, t)
    pd.testing.assert_frame_equal(a.weights_, b.weights_)
    pd.testing.assert_frame_equal(a.by_dwell_, b.by_dwell_)
    fa, fb = funnel(g.tables, stages, t, ["source"]), funnel(changed, stages, t, ["source"])
    for name in ("conversion", "dwell", "loss_reasons", "by_segment"):
        pd.testing.assert_frame_equal(getattr(fa, name), getattr(fb, name), check_dtype=False)


def test_a_deal_created_at_a_later_stage_counts_only_for_the_stages_it_was_in() -> None:
    """Logged after the fact: u is created at B and won; it says nothing about A, which it skipped."""
    opps = pd.DataFrame({"opportunity_id": ["u", "y"], "created_at": [T("2025-03-01"), T("2025-03-01")], "amount": 1.0})
    hist = pd.DataFrame({"opportunity_id": ["u", "u", "y", "y"], "stage": ["B", "W", "A", "L"],
                         "entered_at": [T("2025-03-01"), T("2025-03-05"), T("2025-03-01"), T("2025-03-09")]})
    w = StageWeights().fit(Tables(opps, hist), STAGES, T("2025-04-01")).weights_.set_index("stage")
    assert (w.loc["A", "n"], w.loc["A", "won"]) == (1, 0)  # y only
    assert (w.loc["B", "n"], w.loc["B", "won"]) == (1, 1)  # u only


@PROFILE
@given(data=st.data(), g=exports())
def test_weights_and_timing_read_piece_by_piece_equal_the_whole(data, g) -> None:
    """The stays of millions of deals are reduced a few deals at a time (features.stays.by_deals):
    any piece size gives the whole history's weights and timing, and no piece splits a deal."""
    stages, t = StageOrder(g.stages), _t(data.draw, g.tables)
    rows = data.draw(st.integers(1, 40))
    history = g.tables.stage_history
    pieces = list(stays_module.by_deals(history, rows))
    pd.testing.assert_frame_equal(pd.concat(pieces), history)
    assert sum(p["opportunity_id"].nunique() for p in pieces) == history["opportunity_id"].nunique()
    whole_w, whole_t = StageWeights(g.segments).fit(g.tables, stages, t), TimeToWin().fit(g.tables, stages, t)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stays_module, "CHUNK_ROWS", rows)
        piecewise_w, piecewise_t = StageWeights(g.segments).fit(g.tables, stages, t), TimeToWin().fit(g.tables, stages, t)
    for name in ("weights_", "by_dwell_", "by_segment_"):
        pd.testing.assert_frame_equal(getattr(whole_w, name), getattr(piecewise_w, name))
    pd.testing.assert_frame_equal(whole_t.to_frame(), piecewise_t.to_frame())


def test_deals_without_a_stage_yet_give_no_snapshot_and_no_error(small) -> None:
    """A piece of an export whose deals have no stage history (hypothesis found one): nothing
    open to snapshot, and the timing learns from nothing rather than failing."""
    from features.snapshots import snapshot_points

    t = small.tables
    bare = Tables(t.opportunities, t.stage_history.iloc[:0], t.activities, t.field_history)
    assert snapshot_points(bare, StageOrder(small.stages), until=t.end).empty
