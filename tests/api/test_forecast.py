"""POST /v1/forecast: ranges by method for the pipeline a CRM sends; a bad period named."""

from __future__ import annotations

from tests.api.conftest import AUTH


def test_forecast_endpoint(client, body) -> None:
    body["period"] = "2026-10"
    r = client.post("/v1/forecast", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["open_deals"] == 1 and doc["pipeline_amount"] == 42000
    methods = {m["method"]: m for m in doc["methods"]}
    assert set(methods) == {"configured weights", "data-driven stage weights", "model"}
    # one deal: the outcome is 0 or its amount, so only the quantiles are ordered, not the mean
    assert all(m["p10"] <= m["p50"] <= m["p90"] and 0 <= m["expected"] <= 42000 for m in methods.values())
    body["period"] = "2026-13"
    bad = client.post("/v1/forecast", json=body, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "period"]
