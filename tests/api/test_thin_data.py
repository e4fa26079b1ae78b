"""Thin data through the API: Salesforce's dev-org sample, every record made at one moment, so no
deal was watched for the stall horizon. Stall risk is then not known (null), never the configured
win weight standing in for it (issue 40), and nothing answers 500 for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.settings import load_settings
from oppscore.cli import app as cli
from serving.app import create_app
from tests.conftest import SHARED

DEVORG = SHARED / "datasets" / "salesforce-devorg-sample"
KEY = "thin-key"


@pytest.fixture(scope="module")
def devorg_client(tmp_path_factory, monkeypatch_module):
    root: Path = tmp_path_factory.mktemp("thin")
    monkeypatch_module.chdir(root)
    monkeypatch_module.setenv("OPPSCORE_HOME", str(root / "home"))
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    for args in (["import", "salesforce", str(DEVORG), "--out", "devorg"], ["train", "--data", "devorg"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert "stall: serving nothing (stall risk not known" in " ".join(result.output.split())
    settings = load_settings(root / "devorg" / "oppscore.toml").model_copy(update={"api_keys": [KEY]})
    with TestClient(create_app(settings, data=root / "devorg", start_reloader=False), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_stall_risk_is_null_where_not_known_and_win_probability_is_served(devorg_client) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    pipeline = devorg_client.get("/v1/pipeline", headers=auth)
    assert pipeline.status_code == 200, pipeline.text
    deals = pipeline.json()["deals"]
    assert deals and all(d["stall_risk"] is None and 0 < d["win_probability"] < 1 for d in deals)
    assert pipeline.json()["stalled"] == 0 and pipeline.json()["stall_alerts"] == []
    one = devorg_client.get(f"/v1/opportunities/{deals[0]['opportunity_id']}", headers=auth)
    assert one.status_code == 200 and one.json()["stall_risk"] is None and one.json()["win_probability"] == deals[0]["win_probability"]
