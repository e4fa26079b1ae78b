"""The track record: realised figures of recorded scores equal a direct computation from the
final outcomes; drift flags a feed that stops at the first run after, and nothing on a
stationary world; a champion made worse turns the verdict to retrain; a shadow version's
figures, and the realised comparison that promotion reads."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from analytics.forecast import actual_won, methods_for
from analytics.forecast import forecast as run_forecast
from analytics.track_record import compare, track_record
from features.settings import MonitorConfig
from features.stages import StageOrder
from features.tables import Tables
from scoring.drift import of_run
from scoring.history import RunFacts, ScoreHistory
from scoring.score import score_open
from tests.conftest import weaker
from tests.models.label_definitions import won_within_label

WEEK = pd.Timedelta(weeks=1)


def _versioned(bundle, version: str):
    out = copy.copy(bundle)
    out.metadata = {**bundle.metadata, "version": version}
    return out


def _weekly(history: ScoreHistory, bundle, tables: Tables, first: pd.Timestamp, runs: int, role: str = "champion") -> list[dict]:
    """`runs` weekly scoring runs from `first`, each as of its date, recorded with its drift."""
    measured = []
    for k in range(runs):
        at = first + k * WEEK
        tally: dict = {}
        scored = score_open(bundle, tables, at, with_factors=False, drift_into=tally)
        drift = of_run(bundle, [tally])
        history.record(scored, at, bundle.version, "batch", RunFacts.of(bundle, role=role, drift=drift if role == "champion" else None))
        measured.append(drift)
    return measured


def _record(history: ScoreHistory, tables: Tables, stages: StageOrder):
    return track_record(history.runs(), history.scores(), history.forecasts(), tables, stages, MonitorConfig())


@pytest.fixture()
def history(tmp_path) -> ScoreHistory:
    return ScoreHistory(f"sqlite:///{tmp_path / 'history.db'}", "oppscore")


def _direct(tables: Tables, stages: StageOrder, recorded: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Labels from the final outcomes by the label's own definition, complete horizons only."""
    y = won_within_label(tables, stages, recorded[["opportunity_id", "as_of"]], horizon, tables.end)
    complete = (recorded["as_of"] + pd.Timedelta(days=horizon) <= tables.end).to_numpy()
    return recorded.assign(y=np.where(complete, np.nan_to_num(y), np.nan)).dropna(subset=["y"])


def test_realised_figures_of_26_weekly_runs_equal_a_direct_computation(history, trained, medium) -> None:
    tables, stages = medium.tables, StageOrder(medium.stages)
    bundle = _versioned(trained.bundle, "1")
    _weekly(history, bundle, tables, tables.end - 40 * WEEK, 26)
    record = _record(history, tables, stages)
    horizon = bundle.metadata["win_label"]["horizon_days"]
    recorded = history.scores()
    assert record.runs["id"].nunique() == 26 and len(recorded) == len(record.scores)
    done = _direct(tables, stages, recorded, horizon)
    assert 500 < len(done) < len(recorded)  # some resolved, some still pending
    y, p = done["y"].to_numpy(), done["win_probability"].to_numpy()
    got = record.overall["champion"]
    assert got["resolved"] == len(done) and got["won"] == int(y.sum())
    assert got["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert got["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-9)
    assert got["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    months = record.tables["month"].set_index("month")
    for month, part in done.groupby(done["as_of"].dt.strftime("%Y-%m")):
        assert months.loc[month, "resolved"] == len(part)
        if len(part) >= 30 and part["y"].nunique() == 2:
            assert months.loc[month, "log_loss"] == pytest.approx(log_loss(part["y"], part["win_probability"], labels=[0, 1]), abs=1e-9)
            assert months.loc[month, "auc"] == pytest.approx(roc_auc_score(part["y"], part["win_probability"]), abs=1e-9)
    assert months["pending"].sum() == len(recorded) - len(done)
    as_dict = record.to_dict()
    assert as_dict["scores"]["resolved"] == len(done) and as_dict["promised"]["1"]["log_loss"] == bundle.metadata["held_out"]["win"]["model"]["log_loss"]


def _without_activities_after(tables: Tables, t: pd.Timestamp) -> Tables:
    acts = tables.activities
    return Tables(tables.opportunities, tables.stage_history, acts[acts["occurred_at"] <= t], tables.field_history)


def test_a_feed_that_stops_is_flagged_at_the_first_run_after_and_a_stationary_world_raises_nothing(history, trained, medium) -> None:
    stages = StageOrder(medium.stages)
    bundle = _versioned(trained.bundle, "1")
    first = medium.tables.end - 30 * WEEK
    stop = first + 19 * WEEK  # the run of week 20 is the last that saw activities logged
    stopped = _without_activities_after(medium.tables, stop)
    _weekly(history, bundle, stopped, first, 24)
    drift = _record(history, stopped, stages).drift
    assert len(drift) == 24
    assert not drift["flagged"].iloc[:20].any(), drift.iloc[:20][["as_of", "largest_feature", "largest_psi", "score_psi", "silent"]]
    assert drift["flagged"].iloc[20], drift.iloc[20]
    assert "activity" in drift["silent_families"].iloc[20] or any(c.startswith("activit") for c in drift["drifted"].iloc[20])


def test_twelve_runs_on_a_stationary_world_raise_no_flag(history, trained, medium) -> None:
    stages = StageOrder(medium.stages)
    _weekly(history, _versioned(trained.bundle, "1"), medium.tables, medium.tables.end - 30 * WEEK, 12)
    record = _record(history, medium.tables, stages)
    assert not record.drift["flagged"].any(), record.drift[["as_of", "largest_feature", "largest_psi", "score_psi"]]
    assert record.verdict["status"] in ("no reason to retrain", "too early to tell"), record.verdict


def _outcomes_turned(tables: Tables, stages: StageOrder, ids: set) -> Tables:
    """The named deals' outcomes swapped: the won ones lost at the same time, the lost ones won."""
    h = tables.stage_history.copy()
    mine = h["opportunity_id"].isin(ids)
    won, lost = mine & (h["stage"] == stages.config.won), mine & (h["stage"] == stages.config.lost)
    h.loc[won, "stage"], h.loc[lost, "stage"] = stages.config.lost, stages.config.won
    return Tables(tables.opportunities, h, tables.activities, tables.field_history)


def test_a_champion_made_worse_turns_the_verdict_to_retrain(history, trained, medium) -> None:
    tables, stages = medium.tables, StageOrder(medium.stages)
    bundle = _versioned(trained.bundle, "1")
    _weekly(history, bundle, tables, tables.end - 40 * WEEK, 12)
    assert _record(history, tables, stages).verdict["status"] == "no reason to retrain"
    turned = _outcomes_turned(tables, stages, set(history.scores()["opportunity_id"]))
    said = _record(history, turned, stages).verdict
    assert said["status"] == "retrain recommended", said
    assert said["realised"]["log_loss"] > said["realised"]["promised_log_loss"]
    assert "realised log loss" in said["says"] and "promised" in said["says"]


def test_a_shadow_version_is_judged_beside_the_champion_and_the_better_one_found(history, trained, medium) -> None:
    tables, stages = medium.tables, StageOrder(medium.stages)
    good, poor = _versioned(trained.bundle, "2"), _versioned(weaker(trained).bundle, "1")
    first = tables.end - 40 * WEEK
    _weekly(history, poor, tables, first, 10)  # the champion: a constant rate
    _weekly(history, good, tables, first, 10, role="shadow")
    record = _record(history, tables, stages)
    shadow = _direct(tables, stages, history.scores().query("role == 'shadow'"), good.metadata["win_label"]["horizon_days"])
    assert record.overall["shadow"]["log_loss"] == pytest.approx(log_loss(shadow["y"], shadow["win_probability"], labels=[0, 1]), abs=1e-9)
    assert record.overall["shadow"]["auc"] == pytest.approx(roc_auc_score(shadow["y"], shadow["win_probability"]), abs=1e-9)
    assert set(record.tables["role"]["role"]) == {"champion", "shadow"}
    better = compare(record.scores, "2", "1")
    assert better["pairs"] == len(shadow) and better["better_beyond_doubt"] and better["log_loss_gap"] < 0
    # the previous score a run reads is the champion's only
    assert history.previous(list(shadow["opportunity_id"].unique()), tables.end).index.isin(history.scores().query("role == 'champion'")["opportunity_id"]).all()


def test_the_champion_does_not_beat_a_better_shadow(history, trained, medium) -> None:
    tables, stages = medium.tables, StageOrder(medium.stages)
    good, poor = _versioned(trained.bundle, "2"), _versioned(weaker(trained).bundle, "3")
    first = tables.end - 40 * WEEK
    _weekly(history, good, tables, first, 6)
    _weekly(history, poor, tables, first, 6, role="shadow")
    assert not compare(_record(history, tables, stages).scores, "3", "2")["better_beyond_doubt"]


def test_a_forecast_is_judged_once_its_period_has_passed(history, trained, medium) -> None:
    tables, stages = medium.tables, StageOrder(medium.stages)
    at = tables.end - 20 * WEEK
    past, future = (at, at + pd.Timedelta(days=30)), (tables.end, tables.end + pd.Timedelta(days=30))
    for period in (past, future):
        f = run_forecast(tables, stages, period, methods_for(stages, trained.bundle), as_of=min(at, period[0]), sims=200)
        history.record_forecast(f.methods, at, f.as_of, f.period, f.open_deals, "1", "batch")
    record = _record(history, tables, stages)
    judged = record.forecasts
    assert len(judged) == len(f.methods) and (judged["period_end"] == past[1]).all()
    assert judged["actual"].iloc[0] == pytest.approx(actual_won(tables, stages, past, at))
    summary = record.forecast_summary.set_index("method")
    assert (summary["judged"] == 1).all() and (summary["pending"] == 1).all()
    assert set(summary["coverage_p10_p90"]) <= {0.0, 1.0}
