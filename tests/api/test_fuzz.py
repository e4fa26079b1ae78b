"""Fuzzing the OpenAPI schema with schemathesis' own command, every check on (`--checks all`):
no 500, answers that fit the schema, what the schema allows accepted and what it forbids
refused (issue 39). One check is swapped for a variant that lets the contract's rules across
fields refuse (`tests/api/schemathesis_hooks.py` says which and why). Bounded so the suite
stays fast; the seed is the suite's (OPPSCORE_TEST_SEED)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.app import create_app
from tests.api.conftest import KEY
from tests.faults.live import export_folder
from tests.faults.served import Served

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 25


def test_every_schemathesis_check_passes(served_store, tmp_path, seed, small) -> None:
    isolated = served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'fuzz.db'}"})  # events it sends are stored here, not in the shared home
    folder = export_folder(small.tables, small.stages, small.segments, tmp_path / "export")  # the page's routes have a pipeline to show
    app = create_app(isolated, data=folder, start_reloader=False)
    assert set(app.openapi()["paths"]["/v1/events/{event_id}"]) == {"delete"}
    with Served(app) as port:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance", "-H", f"Authorization: Bearer {KEY}", "--max-examples", str(EXAMPLES),
             "--seed", str(seed), "--no-color"],
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks", "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
            capture_output=True, text=True, timeout=900,
        )
    said = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, said
    assert "Tested: 12" in done.stdout, said  # every operation the schema has, the deletion of an event included
