"""The rule everything rests on: a feature at t is a function of rows at or before t only.

Stated as properties over random exports, random times and random later rows: adding rows
after t, or changing rows that lie after t, must leave every feature at t unchanged; and the
features of one opportunity computed alone equal its row of the batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from features.frame import build_features, make_spec, open_points
from features.pit_stats import PointInTimeStats
from features.snapshots import snapshot_points
from features.stages import StageOrder
from features.synthetic import generate
from features.tables import TS_DTYPE, Tables

PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def exports(draw):
    g = generate(n=draw(st.integers(20, 90)), seed=draw(st.integers(0, 10_000)), stages=draw(st.sampled_from(["en", "zh"])))
    return g


def _t(draw, tables: Tables) -> pd.Timestamp:
    lo, hi = tables.opportunities["created_at"].min(), tables.end
    frac = draw(st.floats(0.3, 0.95))
    return (lo + (hi - lo) * frac).floor("s")


@st.composite
def later_changes(draw, tables: Tables, stages: StageOrder, t: pd.Timestamp):
    """Tables with random rows added after t and random rows after t changed."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    opps, hist, acts, fields = tables.opportunities.copy(), tables.stage_history.copy(), tables.activities.copy(), tables.field_history.copy()
    ids = opps["opportunity_id"].to_numpy()
    after = lambda n: pd.Series(t + pd.to_timedelta(rng.uniform(1, 200 * 86400, n), unit="s")).astype(TS_DTYPE)  # noqa: E731
    k = draw(st.integers(1, 30))
    new_hist = pd.DataFrame({"opportunity_id": rng.choice(ids, k), "stage": rng.choice(stages.names, k), "entered_at": after(k)})
    m = draw(st.integers(1, 60))
    new_acts = pd.DataFrame(
        {
            "opportunity_id": rng.choice(ids, m),
            "occurred_at": after(m),
            "type": rng.choice(["call", "email", "meeting", "demo", "webinar"], m),
            "direction": rng.choice(["inbound", "outbound"], m),
            "contact_id": rng.choice(["C-1", "C-2", "C-new"], m),
        }
    )
    j = draw(st.integers(0, 5))
    new_opps = opps.sample(n=j, random_state=int(rng.integers(0, 1000)), replace=True).assign(
        opportunity_id=[f"NEW-{i}" for i in range(j)], created_at=after(j).to_numpy()
    )
    new_opp_hist = pd.DataFrame({"opportunity_id": new_opps["opportunity_id"], "stage": rng.choice(stages.names, j), "entered_at": new_opps["created_at"]})
    # change rows that already lie after t: other stages, other types, shifted (still after t)
    late = hist["entered_at"] > t
    hist.loc[late, "stage"] = rng.choice(stages.names, int(late.sum()))
    f = draw(st.integers(1, 20))
    new_fields = pd.DataFrame(
        {
            "opportunity_id": rng.choice(ids, f),
            "field": rng.choice(["amount", "expected_close_date"], f),
            "value": rng.choice(["123.0", "2031-01-01T00:00:00Z", "5.5"], f),
            "changed_at": after(f),
        }
    )
    late_f = fields["changed_at"] > t
    fields.loc[late_f, "value"] = np.where(fields.loc[late_f, "field"] == "amount", "1.0", "2040-06-01T00:00:00Z")
    late_a = acts["occurred_at"] > t
    acts.loc[late_a, "type"] = "changed"
    acts.loc[late_a, "occurred_at"] = acts.loc[late_a, "occurred_at"] + pd.Timedelta(hours=3)
    return Tables(
        pd.concat([opps, new_opps], ignore_index=True),
        pd.concat([hist, new_hist, new_opp_hist], ignore_index=True),
        pd.concat([acts, new_acts], ignore_index=True),
        pd.concat([fields, new_fields], ignore_index=True),
    )


def _scenario(data, g):
    """A random time t, the vocabulary fixed at training time, and the export with rows after t
    added and changed."""
    stages = StageOrder(g.stages)
    t = _t(data.draw, g.tables)
    spec = make_spec(g.tables, stages, g.segments)
    return stages, t, spec, data.draw(later_changes(g.tables, stages, t))


def _features(tables: Tables, spec, stages: StageOrder, t: pd.Timestamp) -> pd.DataFrame:
    stats = PointInTimeStats(spec.stat_keys).fit(tables, stages)
    points = open_points(tables, stages, t)
    return build_features(tables, points, spec, stats).sort_values("opportunity_id").reset_index(drop=True)


@PROFILE
@given(data=st.data(), g=exports())
def test_rows_after_t_do_not_change_features_at_t(data, g) -> None:
    stages, t, spec, changed = _scenario(data, g)
    before = _features(g.tables, spec, stages, t)
    assume(len(before) > 0)  # two empty frames prove nothing
    after = _features(changed, spec, stages, t)
    pd.testing.assert_frame_equal(before, after)


@PROFILE
@given(data=st.data(), g=exports())
def test_training_snapshots_before_t_do_not_see_rows_after_t(data, g) -> None:
    stages, t, spec, changed = _scenario(data, g)

    def frame(tables: Tables) -> pd.DataFrame:
        stats = PointInTimeStats(spec.stat_keys).fit(tables, stages)
        points = snapshot_points(tables, stages, every_days=7)
        points = points[points["as_of"] <= t]
        return build_features(tables, points, spec, stats).sort_values(["opportunity_id", "as_of"]).reset_index(drop=True)

    before = frame(g.tables)
    assume(len(before) > 0)
    pd.testing.assert_frame_equal(before, frame(changed))


@PROFILE
@given(data=st.data(), g=exports())
def test_one_opportunity_alone_equals_its_batch_row(data, g) -> None:
    """The serving path: only the opportunity's own rows, statistics from the bundle."""
    stages = StageOrder(g.stages)
    t = _t(data.draw, g.tables)
    spec = make_spec(g.tables, stages, g.segments)
    stats = PointInTimeStats(spec.stat_keys).fit(g.tables, stages)
    points = open_points(g.tables, stages, t)
    assume(not points.empty)
    batch = build_features(g.tables, points, spec, stats).set_index("opportunity_id")
    chosen = data.draw(st.sampled_from(sorted(points["opportunity_id"])))
    alone = build_features(g.tables.subset([chosen]), points[points["opportunity_id"] == chosen], spec, stats).set_index("opportunity_id")
    pd.testing.assert_frame_equal(alone, batch.loc[[chosen]])


@PROFILE
@given(data=st.data(), g=exports())
def test_the_export_as_of_t_ignores_rows_after_t_and_hides_loss_reasons_until_the_loss(data, g) -> None:
    """`Tables.as_of` is what every analytics reads: rows after t change nothing in it, and a
    loss reason shows only for deals whose last stage at t is the lost stage."""
    from features.stays import final_states

    stages, t, _, changed = _scenario(data, g)
    before, after = g.tables.as_of(t, stages), changed.as_of(t, stages)
    assume(len(before.opportunities) > 0)
    for name in ("opportunities", "stage_history", "activities", "field_history"):
        key = ["opportunity_id"] + ([] if name == "opportunities" else [before.frame(name).columns[1]])
        a = before.frame(name).sort_values(key, kind="stable").reset_index(drop=True)
        b = after.frame(name).sort_values(key, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    state = before.opportunities["opportunity_id"].map(final_states(before.stage_history, stages)["state"])
    assert before.opportunities["loss_reason"].notna().le(state.eq("lost")).all()
    assert before.opportunities["expected_close_date"].isna().all()
