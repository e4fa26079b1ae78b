"""Requests that once answered 500 or the wrong 4xx (issue 29's probe): each answers the
documented status, names what was wrong, and the service keeps serving."""

from __future__ import annotations

import copy

import pytest

from serving.schemas import EXAMPLE_OPPORTUNITY
from tests.api.conftest import AUTH, KEY


def _opportunity(**changes) -> dict:
    opp = copy.deepcopy(EXAMPLE_OPPORTUNITY)
    opp.update(changes)
    return opp


def _ok_after(client) -> None:
    r = client.post("/v1/score", json={"as_of": "2026-09-30T00:00:00Z", "opportunities": [_opportunity()]}, headers=AUTH)
    assert r.status_code == 200, r.text


def test_json_nested_a_thousand_deep_is_422(client) -> None:
    body = b'{"opportunities": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = client.post("/v1/score", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "nested" in r.text, r.text
    _ok_after(client)


@pytest.mark.parametrize("close", ["9999-12-31", "0001-01-01", "2262-04-12"])
def test_a_close_date_no_clock_can_hold_is_422_naming_it(client, close) -> None:
    opp = _opportunity(field_history=[{"field": "expected_close_date", "value": close, "changed_at": "2026-08-10T00:00:00Z"}])
    r = client.post("/v1/score", json={"as_of": "2026-09-30T00:00:00Z", "opportunities": [opp]}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:5] == ["body", "opportunities", 0, "field_history", 0] and close in r.text
    _ok_after(client)


@pytest.mark.parametrize(
    "change",
    [
        {"opportunities": [_opportunity(created_at="1678-01-02T00:00:00Z", stage_history=[{"stage": "Prospecting", "entered_at": "1678-01-02T00:00:00Z"}], activities=[])]},
        {"as_of": "2261-11-01T00:00:00Z"},
        {"as_of": "2261-12-30T00:00:00Z", "period": "next-30d"},
        {"as_of": "2026-09-30T00:00:00Z", "period": "next-9999d"},
    ],
)
def test_forecasts_at_the_edges_of_time_answer_without_500(client, change) -> None:
    body = {"period": "2026-10", "as_of": "2026-09-30T00:00:00Z", "opportunities": [_opportunity()], **change}
    r = client.post("/v1/forecast", json=body, headers=AUTH)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["detail"][0]["loc"][0] == "body"


def test_amounts_past_any_deal_are_422_not_a_null_in_the_forecast(client) -> None:
    body = {"period": "2026-10", "as_of": "2026-09-30T00:00:00Z", "opportunities": [_opportunity(amount=1.7e308), _opportunity(opportunity_id="OPP-2", amount=1.7e308)]}
    r = client.post("/v1/forecast", json=body, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "amount", r.text


def test_epoch_numbers_as_text_are_refused_like_numbers(client) -> None:
    r = client.post("/v1/score", json={"as_of": "1775000000", "opportunities": [_opportunity()]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "as_of"] and "ISO 8601" in r.text, r.text


@pytest.mark.parametrize("content", [b'{"opportunities": ["\xff\xfe"]}', b'{"opportunities": [' + b"9" * 5000 + b"]}"])
def test_bodies_json_cannot_read_are_422_json_invalid(client, content) -> None:
    r = client.post("/v1/score", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid", r.text


def test_a_keyless_request_is_401_whatever_body_it_declares(client) -> None:
    r = client.post("/v1/score", content=b"{}", headers={"Content-Type": "application/json", "Content-Length": str(50_000_000)})
    assert r.status_code == 401, r.text
    r = client.post("/v1/score", content=b"{}", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", "Content-Length": str(50_000_000)})
    assert r.status_code == 413, r.text


def test_the_open_readyz_shows_no_path(tmp_path, monkeypatch) -> None:
    """Open to anyone, /readyz says what is missing, never where on the disk."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # another test's registry (MLflow sets the variable)
    from fastapi.testclient import TestClient

    from features.settings import Settings
    from serving.app import create_app

    settings = Settings(home=tmp_path / ".oppscore", champion_dir=tmp_path / "models" / "champion", api_keys=[KEY])
    with TestClient(create_app(settings, start_reloader=False)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and "oppscore train" in r.text and str(tmp_path) not in r.text and "/tmp" not in r.text, r.text
