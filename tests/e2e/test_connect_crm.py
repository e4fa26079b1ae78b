"""The README's "Connect your CRM" runs as written: the nightly round trip (import → train →
score → export-scores → import --into → score → export-scores --push) against a local server
that follows Bulk API 2.0, and the live one (events in, a score by id) with its own requests."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from features.settings import load_settings
from serving.app import create_app
from tests.conftest import SHARED
from tests.crm import fake_crm

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    part = text[text.index("## Connect your CRM"):]
    part = part[: part.index("\n## ", 3)]
    return re.findall(r"```sh\n(.*?)```", part, re.S)


def test_the_nightly_and_the_live_round_trip_run_as_written(tmp_path: Path, monkeypatch) -> None:
    """The nightly block runs whole in bash, from a folder with `../shared` beside it (as the
    repository has), on Salesforce's own sample records; its push goes to the test Salesforce."""
    nightly, live = _blocks()
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPPSCORE_HOME", "OPPSCORE_CHAMPION_DIR", "OPPSCORE_DATABASE_URL", "OPPSCORE_API_KEYS")}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "160", "OPPSCORE_CRM__POLL_SECONDS": "0.01"}
    fake = fake_crm.salesforce()
    with fake_crm.serving(fake) as url:
        env |= {"SALESFORCE_INSTANCE_URL": url, "SALESFORCE_ACCESS_TOKEN": fake_crm.TOKEN}
        done = subprocess.run(["bash", "-e", "-c", nightly], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scores = pd.read_csv(repo / "scores.csv", dtype={"opportunity_id": str})
    source = pd.read_csv(SHARED / "datasets" / "salesforce-devorg-sample" / "opportunity.csv", dtype=str)
    assert set(scores["opportunity_id"]) == set(source.loc[source["IsClosed"] == "0", "Id"])
    assert set(fake.state.records) == set(scores["opportunity_id"])  # every open deal's score is on its record
    moved = scores.set_index("opportunity_id").loc["006Hp000015Yh7oIAC"]
    assert moved["stage"] == "Negotiation/Review"  # the changes export's row was merged before the second scoring

    lines = [ln for ln in live.splitlines() if ln.strip()]
    exported = subprocess.run(["bash", "-c", f"{lines[0]}; echo \"$OPPSCORE_API_KEYS\"; echo \"$OPPSCORE_KEY\""], capture_output=True, text=True, check=True).stdout.split()
    assert lines[0].startswith("export ") and len(exported) == 2 and exported[0] == exported[1]  # the key the service takes is the key curl sends
    key = exported[1]
    assert lines[1] == "oppscore serve --data crm-data &" and lines[2].startswith("until curl -sf http://127.0.0.1:8000/readyz")
    settings = load_settings(repo / "crm-data" / "oppscore.toml").model_copy(update={"api_keys": [key]})
    monkeypatch.chdir(repo)
    with TestClient(create_app(settings, data=repo / "crm-data", start_reloader=False), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        for line in lines[3:]:
            words = shlex.split(line.replace("$OPPSCORE_KEY", key))
            assert f"Authorization: Bearer {key}" in words
            path = next(w for w in words if w.startswith("http://")).split("8000", 1)[1]
            body = words[words.index("-d") + 1] if "-d" in words else None
            if body is not None:
                r = client.post(path, content=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] == len(json.loads(body)["events"])
            else:
                r = client.get(path, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 200, r.text
                assert r.json()["events"] == 2 and r.json()["status"] == "open" and r.json()["stage"] == "Negotiation/Review"
