"""End to end, as a user runs it: generate → train → register → `oppscore serve` → score over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
from typer.testing import CliRunner

from oppscore.cli import app

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_train_serve_score(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runner.invoke(app, ["generate", "--out", "crm", "--n", "1500", "--seed", "5", "--stages", "zh"]).exit_code == 0
    trained = runner.invoke(app, ["train", "--data", "crm"])
    assert trained.exit_code == 0, trained.output
    assert "champion: version 1" in trained.output
    scored = runner.invoke(app, ["score", "--data", "crm", "--out", "scores.csv", "--as-of", "2026-09-01"])
    assert scored.exit_code == 0, scored.output
    batch = pd.read_csv("scores.csv")
    assert {"opportunity_id", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors"} <= set(batch.columns)
    assert (Path("models") / "crm" / "champion" / "bundle.json").exists()  # the project named after its folder

    port = _free_port()
    env = {**os.environ, "OPPSCORE_API_KEYS": "e2e-key", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "oppscore.cli", "serve", "--port", str(port), "--data", "crm"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("the service did not become ready")
        row = batch.iloc[0]
        opp_id = row["opportunity_id"]
        opps = pd.read_csv("crm/opportunities.csv").set_index("opportunity_id").loc[opp_id]
        hist = pd.read_csv("crm/stage_history.csv")
        acts = pd.read_csv("crm/activities.csv")
        fields = pd.read_csv("crm/field_history.csv")
        record = {
            "opportunity_id": opp_id, "created_at": opps["created_at"], "amount": float(opps["amount"]),
            **{k: opps[k] for k in ("account_id", "owner_id", "team", "industry", "region", "source", "company_size")},
            "stage_history": [{"stage": r.stage, "entered_at": r.entered_at} for r in hist[hist.opportunity_id == opp_id].itertuples()],
            "activities": [{"occurred_at": r.occurred_at, "type": r.type, "direction": r.direction, "contact_id": r.contact_id} for r in acts[acts.opportunity_id == opp_id].itertuples()],
            "field_history": [{"field": r.field, "value": str(r.value), "changed_at": r.changed_at} for r in fields[fields.opportunity_id == opp_id].itertuples()],
        }
        r = httpx.post(f"{base}/v1/score", json={"as_of": "2026-09-01T00:00:00Z", "opportunities": [record]}, headers={"Authorization": "Bearer e2e-key"}, timeout=30)
        assert r.status_code == 200, r.text
        s = r.json()["scores"][0]
        assert abs(s["win_probability"] - row["win_probability"]) < 1e-9
        assert s["grade"] == row["grade"]
        assert json.loads(row["top_factors"])[0]["factor"] == s["top_factors"][0]["factor"]
        assert httpx.post(f"{base}/v1/score", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
        page = httpx.get(f"{base}/v1/pipeline?limit=5", headers={"Authorization": "Bearer e2e-key"}, timeout=30).json()
        assert page["open"] > 0 and len(page["deals"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_demo_trains_and_registers_the_champion(tmp_path: Path, monkeypatch) -> None:
    """`make demo` minus the server (which the test above starts the same way)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["demo", "--n", "1200", "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "registered version 1" in result.output and "champion: version 1" in result.output
    assert (tmp_path / "demo-data" / "oppscore.toml").exists()
    assert (tmp_path / "models" / "champion" / "bundle.json").exists()
    from features.settings import load_settings
    from scoring.history import ScoreHistory

    runs = ScoreHistory.of(load_settings(tmp_path / "demo-data" / "oppscore.toml")).runs()  # the demo's history replayed: a track record from the first page load
    replayed = runs[(runs["source"] == "replay") & (runs["role"] == "replay")]
    assert len(replayed) >= 4 and "replayed" in result.output
