"""The README's "Connect your CRM" runs as written: the nightly round trip (import → train →
score → export-scores → import --into → score → export-scores --push) against a local server
that follows Bulk API 2.0, and the live one (events in, a score by id) with its own requests."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from benchmarks.import_into import split_week
from benchmarks.import_salesforce import write_export as write_salesforce_export
from features.settings import load_settings
from oppscore.cli import app
from serving.app import create_app
from tests.crm import fake_crm

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    part = text[text.index("## Connect your CRM"):]
    part = part[: part.index("\n## ", 3)]
    return re.findall(r"```sh\n(.*?)```", part, re.S)


def test_the_nightly_and_the_live_round_trip_run_as_written(tmp_path: Path, monkeypatch) -> None:
    nightly, live = _blocks()
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "OPPSCORE_HOME", "OPPSCORE_CHAMPION_DIR", "OPPSCORE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "160")
    write_salesforce_export(600, tmp_path / "full")
    split_week(tmp_path / "full", tmp_path / "sf-export", tmp_path / "sf-changes")
    fake = fake_crm.salesforce()
    with fake_crm.serving(fake) as url:
        monkeypatch.setenv("SALESFORCE_INSTANCE_URL", url)
        monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake_crm.TOKEN)
        monkeypatch.setenv("OPPSCORE_CRM__POLL_SECONDS", "0.01")
        for line in (ln for ln in nightly.splitlines() if ln.startswith("oppscore ")):
            done = runner.invoke(app, shlex.split(line)[1:])
            assert done.exit_code == 0, f"{line}\n{done.output[-3000:]}"
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"opportunity_id": str})
    assert len(fake.state.records) == len(scores) > 0
    assert {r[:15] for r in fake.state.records} == set(scores["opportunity_id"])  # every open deal's score is on its record (by its 18-character id)
    assert all(len(r) == 18 for r in fake.state.records)

    settings = load_settings(tmp_path / "crm-data" / "oppscore.toml").model_copy(update={"api_keys": ["k"]})
    monkeypatch.setenv("OPPSCORE_KEY", "k")
    with TestClient(create_app(settings, data=tmp_path / "crm-data", start_reloader=False), raise_server_exceptions=False) as client:
        for line in (ln for ln in live.splitlines() if ln.startswith("curl ")):
            words = shlex.split(line)
            path = next(w for w in words if w.startswith("http://")).split("8000", 1)[1]
            body = words[words.index("-d") + 1] if "-d" in words else None
            if body is not None:
                r = client.post(path, content=body, headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] == len(json.loads(body)["events"])
            else:
                r = client.get(path, headers={"Authorization": "Bearer k"})
                assert r.status_code == 200, r.text
                assert r.json()["events"] == 2 and r.json()["status"] in ("open", "won", "lost")
