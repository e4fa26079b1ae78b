"""Small, real-sized pipelines: a few hundred closed deals must give a trained, calibrated model
or a stated fallback (never a constant 0.5), measured by the rolling-origin backtest beside the
configured weights and the stage rate; where the data hold no signal (Maven), none is claimed."""

from __future__ import annotations

import numpy as np
import pytest

from features.settings import SegmentConfig, Settings
from features.stages import StageOrder
from features.synthetic import generate
from scoring.score import score_open
from training.pipeline import train


def _train(g):
    return train(g.tables, StageOrder(g.stages), Settings(segments=SegmentConfig(columns=g.segments)))


@pytest.mark.parametrize("logging", ["live", "after-the-fact"])
def test_six_hundred_deals_give_a_model_that_beats_the_stage_weights(logging, seed) -> None:
    g = generate(n=600, seed=40 + seed, logging=logging)
    result = _train(g)
    win = result.metrics["win"]
    assert result.counts["win_folds"] >= 4
    assert win["model"]["log_loss"] <= win["stage rate"]["log_loss"] - 0.03
    assert win["model"]["log_loss"] <= win["configured weights"]["log_loss"] - 0.03
    assert win["model"]["auc"] >= win["stage rate"]["auc"] + 0.03
    assert win["model"]["ece"] < 0.08
    lo, hi = win["model"]["interval_90"]["auc"]
    assert lo < win["model"]["auc"] < hi  # the interval is there, and around the figure
    scored = score_open(result.bundle, g.tables, g.tables.end)
    assert scored["win_probability"].nunique() > 5


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
    from features.adapters.maven import import_maven

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
