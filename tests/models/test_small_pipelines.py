"""Small, real-sized pipelines: a few hundred closed deals must give a trained, calibrated model
or a stated fallback (never a constant 0.5), measured by the rolling-origin backtest beside the
configured weights and the stage rate; where the data hold no signal (Maven), none is claimed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.settings import SegmentConfig, Settings
from features.stages import StageOrder
from features.synthetic import generate
from scoring.score import score_open
from training.pipeline import train


def _train(g):
    return train(g.tables, StageOrder(g.stages), Settings(segments=SegmentConfig(columns=g.segments)))


def _judged_later(g, days_before_end: tuple[int, ...]):
    """At each of some past dates, the model trained on the export as known then, and two
    baselines from the same cut (each stage's rate of the model's label among the snapshots it
    learned from, the configured weights), on the deals open then against what happened after
    (won within the model's horizon), pooled; and the last date's training result."""
    from features.frame import open_points, stage_state
    from features.snapshots import snapshot_points
    from tests.models.label_definitions import won_within_label

    stages = StageOrder(g.stages)
    got = {"y": [], "model": [], "stage rate": [], "configured weights": []}
    for days in days_before_end:
        cut = g.tables.end - pd.Timedelta(days=days)
        known = g.tables.as_of(cut, stages)
        result = train(known, stages, Settings(segments=SegmentConfig(columns=g.segments)))
        h = result.bundle.metadata["win_label"]["horizon_days"]
        points = open_points(known, stages, cut)
        got["y"].append(won_within_label(g.tables, stages, points, h, g.tables.end))
        got["model"].append(score_open(result.bundle, known, cut).set_index("opportunity_id")["win_probability"].reindex(points["opportunity_id"]).to_numpy())
        learned = snapshot_points(known, stages, until=cut - pd.Timedelta(days=h))
        rate = pd.Series(won_within_label(known, stages, learned, h, cut)).groupby(stage_state(known, stages, learned)["stage_now"].to_numpy()).mean()
        stage_now = stage_state(known, stages, points)["stage_now"]
        got["stage rate"].append(stage_now.map(rate).to_numpy(dtype=float))
        got["configured weights"].append(stage_now.map(dict(zip(stages.open, g.stages.configured_weights, strict=True))).to_numpy(dtype=float))
    got = {k: np.concatenate(v) for k, v in got.items()}
    known_later = ~np.isnan(got["y"])  # a horizon that passes the export's end: not judged
    return {k: v[known_later] for k, v in got.items()}, result


@pytest.mark.parametrize(("logging", "margin"), [("live", 0.03), ("after-the-fact", -0.03)])
def test_six_hundred_deals_give_a_model_that_beats_the_stage_weights(logging, margin, seed) -> None:
    """Trained on the export as known at four past dates, the served model is judged on the
    deals open then against what happened after (won within its horizon): better than the
    configured weights, and than each stage's rate of that label among the snapshots it learned
    from where deals are logged as they go. Where they are logged after the fact (created at
    their last stages, won within days) the stage alone says nearly all there is to say of a
    win within the horizon at 600 deals: within 0.03 of its log loss, measured over seeds 40-45
    between 0.02 better and 0.03 worse. Its own backtest (whose folds learn from far less than
    the served model) shows its interval."""
    from analytics.metrics import metrics

    g = generate(n=600, seed=40 + seed, logging=logging)
    later, result = _judged_later(g, (300, 250, 200, 150))
    ours = metrics(later["y"], later["model"])
    stage, configured = metrics(later["y"], later["stage rate"]), metrics(later["y"], later["configured weights"])
    assert ours["log_loss"] <= stage["log_loss"] - margin, (ours, stage)
    assert ours["log_loss"] <= configured["log_loss"] - 0.05, (ours, configured)  # their levels are far off; their order is the stage's
    if margin > 0:
        assert ours["auc"] >= stage["auc"] + 0.05, (ours, stage)
    assert ours["ece"] < 0.12
    win = result.metrics["win"]
    assert result.counts["win_folds"] >= 3 and win["model"]["log_loss"] <= win["configured weights"]["log_loss"] - 0.03
    lo, hi = win["model"]["interval_90"]["auc"]
    assert lo < win["model"]["auc"] < hi  # the interval is there, and around the figure
    assert pd.Series(later["model"]).nunique() > 5


def test_after_the_fact_logging_is_learned_open_deals_are_less_likely_to_win() -> None:
    """Won deals there close within days of being logged, so the deals still open at a date win
    far less often than the overall win rate: the served probabilities must say so."""
    g = generate(n=600, seed=5, logging="after-the-fact")
    result = _train(g)
    overall = result.counts["won"] / (result.counts["won"] + result.counts["lost"])
    pooled = result.metrics["win"]["model"]
    assert pooled["positive_rate"] < overall - 0.1  # what the backtest saw: open deals win less
    scored = score_open(result.bundle, g.tables, g.tables.end)
    assert scored["win_probability"].mean() < overall - 0.1
    assert any("after the fact" in line for line in result.report["said"])


def test_the_report_says_what_serves_and_what_would_help() -> None:
    g = generate(n=300, seed=9, logging="after-the-fact")
    g.tables._frames["activities"] = g.tables.activities.iloc[:0]  # no activities logged
    g.tables._columns.pop("activities", None)
    result = _train(g)
    said = " ".join(result.report["said"])
    assert "won and" in said and "serving" in said
    assert "No activities are logged" in said
    assert result.bundle.metadata["sufficiency"]["closed"]["won"] == result.counts["won"]
    assert set(result.bundle.metadata["served"]) == {"win", "stall"}


def test_no_past_date_to_backtest_still_serves_stage_rates_and_says_so() -> None:
    """Every deal closed within a week, no snapshot has a labelled peer: rates, with the reason."""
    import pandas as pd

    from features.tables import Tables

    g = generate(n=200, seed=1)
    t = g.tables
    end = t.end
    opps = t.opportunities.assign(created_at=end - pd.Timedelta(days=3))
    hist = t.stage_history.groupby("opportunity_id").tail(1).merge(opps[["opportunity_id", "created_at"]])
    hist = pd.concat([hist.assign(stage="Prospecting", entered_at=hist["created_at"]), hist.assign(entered_at=end - pd.Timedelta(days=1))])
    hist = hist[["opportunity_id", "stage", "entered_at"]].sort_values(["opportunity_id", "entered_at"], kind="stable")
    tiny = Tables(opps, hist)
    result = train(tiny, StageOrder(g.stages), Settings(segments=SegmentConfig(columns=g.segments)))
    assert result.metrics == {}
    assert "no backtest was possible" in result.bundle.metadata["served"]["win"]["why"]
    scored = score_open(result.bundle, tiny, end)
    assert len(scored) == 0 or not np.allclose(scored["win_probability"], 0.5)


@pytest.mark.slow
def test_maven_claims_no_signal_of_who_wins(tmp_path) -> None:
    """The Maven export has no activities and no win signal in its columns: a model must not
    claim one. Its account (and the account's sector and size) is empty for the deals still open
    and filled for every closed one: filled at close, so never read. What is left is when deals
    close (a deal near its usual close date wins within H more often, won or lost alike): the
    served probability tells won from lost no better than chance among the deals that closed,
    and the report says that it knows when, not which."""
    from tests.conftest import MAVEN

    if not MAVEN.exists():
        pytest.fail(f"the shared Maven export is missing at {MAVEN}")
    from crm.maven_import import import_maven

    imported = import_maven(MAVEN)
    result = train(imported.tables, StageOrder(imported.stages), Settings(segments=SegmentConfig(columns=imported.segments)))
    assert result.bundle.spec.filled_at_close == ["sector", "company_size", "account_id"]
    who = result.report["who_wins"]
    assert who["auc"] < 0.56 and who["interval_90"][1] < 0.6
    win = result.metrics["win"]
    assert win["model"]["auc"] < 0.65  # timing only
    served = result.bundle.metadata["served"]["win"]["candidate"]
    assert win[served]["auc"] >= win["stage rate"]["auc"] - 0.01  # never a model that ranks deals worse than the stage
    said = " ".join(result.report["said"])
    assert "it knows when deals close more than which ones win" in said and "Not read: sector, company_size, account_id" in said
