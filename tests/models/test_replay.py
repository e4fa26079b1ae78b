"""Replay (issue 40): at past dates, train as `train` would on the export as known then, score
and forecast, recorded beside the baselines replayed the same way; a date's run reads nothing
after it (a property); an interrupted replay carries on where it stopped; nothing is registered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.settings import SegmentConfig, Settings
from features.stages import StageOrder
from features.synthetic import generate
from features.tables import Tables
from scoring.history import ScoreHistory
from training import replay


@pytest.fixture(scope="module")
def young():
    return generate(n=500, seed=3, logging="young-org")


def _settings(tmp_path, made) -> Settings:
    return Settings(home=tmp_path / ".oppscore", champion_dir=tmp_path / "models" / "champion", segments=SegmentConfig(columns=made.segments))


@pytest.mark.slow
def test_a_replay_records_each_date_beside_its_baselines_and_carries_on_where_it_stopped(young, tmp_path) -> None:
    stages = StageOrder(young.stages)
    settings = _settings(tmp_path, young)
    history = ScoreHistory.of(settings)
    when = replay.dates(young.tables, stages, "month")[-3:]
    made = replay.replay(young.tables, stages, settings, history, when[:2], young.tables.end)
    assert [r.at for r in made] == when[:2]
    runs = history.runs()
    assert set(runs["source"]) == {"replay"} and set(runs["role"]) == {"replay", "baseline"}
    assert sorted(runs.loc[runs["role"] == "baseline", "model_version"].unique()) == sorted(replay.BASELINES)
    model = runs[runs["role"] == "replay"]
    assert list(model["as_of"]) == when[:2] and model["promised"].notna().all() and (model["horizon_days"] > 0).all()
    assert set(history.forecasts()["as_of"]) == set(when[:2])

    history.forget_replayed(when[1])  # as if stopped half-way through the second date
    runs_left = history.runs()
    assert set(runs_left["as_of"]) == {when[0]}
    again = replay.replay(young.tables, stages, settings, history, when, young.tables.end)
    assert [r.at for r in again] == when[1:]  # the first date is kept, the rest replayed
    assert len(history.runs()) == len(runs) // 2 * 3  # every date whole, once
    assert not (settings.home / "mlflow.db").exists()  # nothing registered: no replayed model can become champion


def _later(tables: Tables, at: pd.Timestamp, seed: int, stages) -> Tables:
    """The same export with rows after `at` changed: later activities dropped, later stage entries
    moved a day on, a deal created after `at` added with its history."""
    rng = np.random.default_rng(seed)
    acts = tables.activities
    late = acts["occurred_at"] > at
    acts = acts[~late | (rng.random(len(acts)) < 0.5)]
    hist = tables.stage_history.copy()
    hist.loc[hist["entered_at"] > at, "entered_at"] += pd.Timedelta(days=1)
    born = at + pd.Timedelta(days=int(rng.integers(1, 20)))
    opps = pd.concat([tables.opportunities, tables.opportunities.iloc[[0]].assign(opportunity_id="LATER-1", created_at=born)], ignore_index=True)
    hist = pd.concat([hist, pd.DataFrame({"opportunity_id": ["LATER-1", "LATER-1"], "stage": [stages.open[0], stages.config.won], "entered_at": [born, born + pd.Timedelta(days=3)]})], ignore_index=True)
    return Tables(opps, hist, acts.reset_index(drop=True), tables.field_history)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(pick=st.integers(0, 10), seed=st.integers(0, 1000))
def test_a_replayed_date_reads_nothing_after_it(young, tmp_path_factory, pick, seed) -> None:
    stages = StageOrder(young.stages)
    when = replay.dates(young.tables, stages, "month")
    at = when[pick % len(when)]
    settings = _settings(tmp_path_factory.mktemp("pit"), young)
    one = replay.at_date(young.tables, stages, settings, at)
    other = replay.at_date(_later(young.tables, at, seed, stages), stages, settings, at)
    pd.testing.assert_frame_equal(one.scores.drop(columns=["factors"], errors="ignore"), other.scores.drop(columns=["factors"], errors="ignore"))  # reasons included
    for name in one.baselines:
        pd.testing.assert_frame_equal(one.baselines[name], other.baselines[name])
    pd.testing.assert_frame_equal(one.forecast.methods, other.forecast.methods)
    assert one.facts == other.facts
