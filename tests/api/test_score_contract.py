"""POST /v1/score: the answer's shape, statuses, and parity with batch scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.score import score_open
from serving.routes.score import INLINE_UP_TO
from tests.api.conftest import AUTH


def test_scores_an_open_opportunity(client, body) -> None:
    r = client.post("/v1/score", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == "1" and doc["model_source"] == "registry"
    [s] = doc["scores"]
    assert s["status"] == "open" and s["stage"] == "Needs Analysis"
    assert 0 <= s["win_probability"] <= 1 and 0 <= s["stall_risk"] <= 1
    assert s["score"] in range(1, 100) and s["grade"] in {"A", "B", "C", "D"}
    assert s["expected_value"] == pytest.approx(42000 * s["win_probability"], abs=0.005)  # to the cent
    assert len(s["top_factors"]) == 3 and all(f["sentence"] for f in s["top_factors"])


def test_closed_and_future_opportunities_are_reported_not_scored(client, body) -> None:
    won = dict(body["opportunities"][0], opportunity_id="W")
    won["stage_history"] = won["stage_history"] + [{"stage": "Closed Won", "entered_at": "2026-09-20T00:00:00Z"}]
    later = dict(body["opportunities"][0], opportunity_id="L", created_at="2026-09-29T00:00:00Z")
    later["stage_history"] = [{"stage": "Prospecting", "entered_at": "2026-09-29T00:00:00Z"}]
    body["opportunities"] += [won, later]
    body["as_of"] = "2026-09-25T00:00:00Z"
    scores = client.post("/v1/score", json=body, headers=AUTH).json()["scores"]
    assert [s["status"] for s in scores] == ["open", "won", "not yet created"]
    assert scores[1]["win_probability"] is None


def test_rows_after_as_of_are_ignored(client, body) -> None:
    first = client.post("/v1/score", json=body, headers=AUTH).json()["scores"][0]
    body["opportunities"][0]["activities"].append({"occurred_at": "2026-10-05T00:00:00Z", "type": "call"})
    body["opportunities"][0]["stage_history"].append({"stage": "Closed Lost", "entered_at": "2026-10-06T00:00:00Z"})
    again = client.post("/v1/score", json=body, headers=AUTH).json()["scores"][0]
    assert again == first


def test_api_score_equals_batch_score(client, medium, trained) -> None:
    as_of = pd.Timestamp("2026-08-15T00:00:00Z")
    batch = score_open(trained.bundle, medium.tables, as_of).set_index("opportunity_id")
    chosen = batch.index[:20]
    t = medium.tables
    opps = []
    for opp in t.opportunities[t.opportunities["opportunity_id"].isin(chosen)].to_dict("records"):
        h = t.stage_history[t.stage_history["opportunity_id"] == opp["opportunity_id"]]
        a = t.activities[t.activities["opportunity_id"] == opp["opportunity_id"]]
        f = t.field_history[t.field_history["opportunity_id"] == opp["opportunity_id"]]
        rec = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in opp.items() if k not in ("expected_close_date", "loss_reason") and v is not None and v == v}
        rec["stage_history"] = [{"stage": r.stage, "entered_at": r.entered_at.isoformat()} for r in h.itertuples()]
        rec["activities"] = [{"occurred_at": r.occurred_at.isoformat(), "type": r.type, "direction": r.direction, "contact_id": r.contact_id} for r in a.itertuples()]
        rec["field_history"] = [{"field": r.field, "value": r.value, "changed_at": r.changed_at.isoformat()} for r in f.itertuples()]
        opps.append(rec)
    assert len(opps) > INLINE_UP_TO  # the batch is scored in the thread pool, each alone on the event loop
    r = client.post("/v1/score", json={"as_of": as_of.isoformat(), "opportunities": opps}, headers=AUTH)
    assert r.status_code == 200, r.text
    alone = [client.post("/v1/score", json={"as_of": as_of.isoformat(), "opportunities": [o]}, headers=AUTH).json()["scores"][0] for o in opps[:3]]
    assert alone == r.json()["scores"][:3]
    for s in r.json()["scores"]:
        row = batch.loc[s["opportunity_id"]]
        assert np.isclose(s["win_probability"], row["win_probability"], atol=1e-9)
        assert np.isclose(s["stall_risk"], row["stall_risk"], atol=1e-9)
        assert s["grade"] == row["grade"] and s["score"] == row["score"]
        assert [f["factor"] for f in s["top_factors"]] == [f["factor"] for f in row["top_factors"]]


def test_model_and_stage_weights(client) -> None:
    m = client.get("/v1/model", headers=AUTH).json()
    assert m["version"] == "1" and m["alias"] == "champion" and m["source"] == "registry"
    assert {"model", "stage rate", "logistic regression"} <= set(m["backtest"]["win"]["pooled"])
    assert m["backtest"]["win"]["per_fold"][0]["fold"] == m["backtest"]["win"]["folds"][0]
    assert m["served"]["win"]["model"] and m["served"]["win"]["why"]
    assert any("won and" in line for line in m["data_sufficiency"]) and len(m["backtest"]["win"]["folds"]) >= 4
    assert m["training_period"]["from"] < m["training_period"]["to"]
    w = client.get("/v1/stage-weights", headers=AUTH).json()
    assert [s["stage"] for s in w["stages"]] == m["stages"]["open"]
    assert all(s["low"] <= s["weight"] <= s["high"] for s in w["stages"])
    seg = client.get("/v1/stage-weights", params={"segment": "source"}, headers=AUTH).json()
    assert {r["value"] for r in seg["by_segment"]} >= {"inbound", "referral"}
    bad = client.get("/v1/stage-weights", params={"segment": "nope"}, headers=AUTH)
    assert bad.status_code == 404 and "no segment 'nope'" in bad.json()["detail"] and "source" in bad.json()["detail"]  # a segment the model has not: not found, its segments named
    assert client.get("/v1/stage-weights", params={"segment": ""}, headers=AUTH).status_code == 422  # the schema's own bound


def test_model_promises_no_null_figure(client) -> None:
    """Every figure /v1/model promises is there: only a note and the fallbacks may be absent."""
    m = client.get("/v1/model", headers=AUTH).json()
    optional = {"note", "fallback"}

    def nulls(value, path: str):
        if isinstance(value, dict):
            for key, inner in value.items():
                if key not in optional:
                    yield from nulls(inner, f"{path}.{key}")
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                yield from nulls(inner, f"{path}[{i}]")
        elif value is None:
            yield path

    assert list(nulls(m, "model")) == []
    assert m["backtest"]["win"]["pooled"]["model"]["log_loss"] > 0 and m["win_probability"]["horizon_days"] > 0
    assert set(m["win_probability"]) == {"means", "horizon_days", "said", "coverage", "won_snapshots", "why"}  # the label as training wrote it, and what it means
    assert f"within {m['win_probability']['horizon_days']} days" in m["win_probability"]["means"] == m["win_probability"]["means"]


def test_health_and_metrics_are_open(client, body) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/score", json=body, headers=AUTH)
    text = client.get("/metrics").text
    assert 'oppscore_model_info{source="registry",version="1"} 1.0' in text
    assert "oppscore_scores_served_total" in text
    assert 'http_request_duration_seconds_bucket{handler="/v1/score"' in text


def test_manager_page_is_served(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "/v1/pipeline" in r.text and "/v1/pipeline/panels" in r.text and "/assets/datatables.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/assets/datatables.js").status_code == 200 and client.get("/assets/datatables.css").status_code == 200
    assert client.get("/assets/datatables.exe").status_code == 404


def test_history_is_read_when_it_exists_and_written_only_when_switched_on(served_store, body, tmp_path) -> None:
    """No history: no change fields, nothing created. Recording on: the first call is recorded,
    the second (later as_of) says what changed since; recording off again: read, not written."""
    import pandas as pd
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.api.conftest import AUTH

    with TestClient(create_app(served_store, start_reloader=False)) as client:  # no history: none made, no change fields
        plain = client.post("/v1/score", json=body, headers=AUTH).json()["scores"]
    assert all(s.get("previous_score") is None and s.get("why_changed") is None for s in plain)
    assert not (served_store.home / "history.db").exists()
    reading = served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'history.db'}"})
    recording = reading.model_copy(update={"serving": served_store.serving.model_copy(update={"record_scores": True})})
    later = {**body, "as_of": (pd.Timestamp(body["as_of"]) + pd.Timedelta(days=7)).isoformat()}
    with TestClient(create_app(recording, start_reloader=False)) as client:
        first = client.post("/v1/score", json=body, headers=AUTH).json()["scores"]
        assert all(s.get("previous_score") is None for s in first)
        second = client.post("/v1/score", json=later, headers=AUTH).json()["scores"]
    opened = [s for s in second if s["status"] == "open"]
    assert opened and all(s["previous_score"] is not None and s["score_change"] == s["score"] - s["previous_score"] for s in opened)
    assert all(isinstance(s["why_changed"], list) for s in opened)
    assert "factors" not in second[0]
    from scoring.history import ScoreHistory

    count = len(ScoreHistory.of(reading).previous([s["opportunity_id"] for s in opened], pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3650)))
    with TestClient(create_app(reading, start_reloader=False)) as client:  # recording off: read, not written
        third = client.post("/v1/score", json={**body, "as_of": (pd.Timestamp(body["as_of"]) + pd.Timedelta(days=9)).isoformat()}, headers=AUTH)
    assert all(s["previous_score"] is not None for s in third.json()["scores"] if s["status"] == "open")
    with ScoreHistory.of(reading).engine.connect() as c:
        import sqlalchemy as sa

        assert c.execute(sa.text("select count(*) from scores")).scalar() == 2 * len(opened) and count == len(opened)


def test_an_unreachable_score_history_never_fails_a_score(served_store, body) -> None:
    """OPPSCORE_DATABASE_URL pointing at a database that refuses connections: 200 without the
    change fields, recording on or off."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.api.conftest import AUTH

    away = served_store.model_copy(update={
        "database_url": "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2",
        "serving": served_store.serving.model_copy(update={"record_scores": True}),
    })
    with TestClient(create_app(away, start_reloader=False)) as client:
        for _ in range(2):
            r = client.post("/v1/score", json=body, headers=AUTH)
            assert r.status_code == 200
            assert all(s.get("previous_score") is None for s in r.json()["scores"])


def test_a_deal_sent_as_the_demo_sends_it_scores_as_the_page_shows_it(client, trained, medium) -> None:
    """The demo's curl sends the deal as the export holds it (record, history, activities, field
    changes): the API's answer is the page's score for it (it was 16 / C against 26 / B)."""
    from features.payload import deal_payload
    from scoring.score import score_open

    page = score_open(trained.bundle, medium.tables, medium.tables.end, with_factors=False).set_index("opportunity_id")
    ids = page.index[:: max(len(page) // 40, 1)][:40].tolist()
    body = {"as_of": medium.tables.end.isoformat(), "opportunities": [deal_payload(medium.tables, oid, trained.bundle.spec.segment_columns) for oid in ids]}
    r = client.post("/v1/score", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    answered = {s["opportunity_id"]: (s["score"], s["win_probability"]) for s in r.json()["scores"]}
    assert answered == {oid: (int(page.loc[oid, "score"]), float(page.loc[oid, "win_probability"])) for oid in ids}
