"""GET /v1/monitor: the track record of the served export, as `oppscore monitor` computes it,
with its plots and the Prometheus gauges; 404 without an export, 503 without a history."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from analytics.track_record import track_record
from features.loading import write_export
from features.settings import settings_toml
from features.stages import StageOrder
from scoring.drift import of_run
from scoring.history import RunFacts, ScoreHistory
from scoring.score import score_open
from serving.app import create_app
from tests.api.conftest import AUTH


@pytest.fixture()
def exported(tmp_path, medium):
    folder = tmp_path / "export"
    write_export(medium.tables, folder)
    (folder / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    return folder


def _settings(served_store, tmp_path):
    return served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'history.db'}"})


def test_the_track_record_of_the_served_export(served_store, tmp_path, exported, trained, medium) -> None:
    settings = _settings(served_store, tmp_path)
    history = ScoreHistory.of(settings)
    for weeks in range(36, 12, -4):
        at = medium.tables.end - pd.Timedelta(weeks=weeks)
        tally: dict = {}
        history.record(score_open(trained.bundle, medium.tables, at, with_factors=False, drift_into=tally), at, "1", "batch", RunFacts.of(trained.bundle, drift=of_run(trained.bundle, [tally])))
    with TestClient(create_app(settings, data=exported, start_reloader=False), raise_server_exceptions=False) as client:
        r = client.get("/v1/monitor", headers=AUTH)
        assert r.status_code == 200, r.text
        got = r.json()
        direct = track_record(history.runs(), history.scores(), history.forecasts(), medium.tables, StageOrder(medium.stages), settings.monitor)
        assert got["verdict"]["status"] == direct.verdict["status"]
        assert got["scores"] == {"recorded": len(direct.scores), "resolved": int(direct.scores["y"].notna().sum()), "pending": int(direct.scores["y"].isna().sum()), "runs": 6}
        assert got["realised"]["champion"]["log_loss"] == pytest.approx(direct.overall["champion"]["log_loss"], abs=1e-12)
        assert len(got["drift"]) == 6 and got["charts"]["reliability"].startswith("data:image/png;base64,")
        metrics = client.get("/metrics").text
        assert "oppscore_realised_log_loss" in metrics and "oppscore_largest_psi" in metrics


def test_without_an_export_it_says_so(served_store, tmp_path) -> None:
    with TestClient(create_app(_settings(served_store, tmp_path), start_reloader=False), raise_server_exceptions=False) as client:
        r = client.get("/v1/monitor", headers=AUTH)
        assert r.status_code == 404 and "--data" in r.json()["detail"]


def test_without_a_score_history_it_says_what_records_one(served_store, tmp_path, exported) -> None:
    settings = served_store.model_copy(update={"home": tmp_path / "empty-home"})  # no history.db there, recording off
    with TestClient(create_app(settings, data=exported, start_reloader=False), raise_server_exceptions=False) as client:
        r = client.get("/v1/monitor", headers=AUTH)
        assert r.status_code == 503 and "oppscore score" in r.json()["detail"]


def test_recorded_api_scores_and_forecasts_enter_the_track_record(served_store, tmp_path, body) -> None:
    """With recording on, a scored request is a run carrying its version's promise and label
    horizon (so it is judged later), and a forecast is kept for its period."""
    settings = _settings(served_store, tmp_path).model_copy(update={"serving": served_store.serving.model_copy(update={"record_scores": True})})
    with TestClient(create_app(settings, start_reloader=False), raise_server_exceptions=False) as client:
        assert client.post("/v1/score", json=body, headers=AUTH).status_code == 200
        r = client.post("/v1/forecast", json={**body, "period": "2026-10"}, headers=AUTH)
        assert r.status_code == 200, r.text
    history = ScoreHistory.of(settings)
    runs = history.runs()
    assert len(runs) == 1 and runs["source"].iloc[0] == "api" and runs["horizon_days"].iloc[0] > 0 and runs["promised"].iloc[0]["win"]["log_loss"] > 0
    assert len(history.scores()) == 1
    forecasts = history.forecasts()
    assert len(forecasts) == len(r.json()["methods"]) and (forecasts["source"] == "api").all()
