"""The README's first session runs as written: every line of its `sh` block that starts with
`oppscore`, in order, in a fresh folder, each exiting 0 (the long-running `serve` and `demo`
are covered by the other end-to-end tests)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[2] / "README.md"


def _session() -> list[str]:
    text = README.read_text(encoding="utf-8")
    part = text[text.index("### A first session"):]
    block = re.search(r"```sh\n(.*?)```", part, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("oppscore ")]


def test_the_readme_session_runs_as_written_beside_the_demo(tmp_path: Path, monkeypatch) -> None:
    """After a demo in the same folder (what `make demo` leaves), the session ends with its own
    model as champion, and the demo's data, champion and score history untouched."""
    from features.settings import load_settings
    from scoring.history import ScoreHistory
    from scoring.store import champion_version

    lines = _session()
    assert len(lines) >= 8
    oppscore = str(Path(sys.executable).with_name("oppscore"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPPSCORE_HOME", "OPPSCORE_API_KEYS", "OPPSCORE_CHAMPION_DIR")}
    env["COLUMNS"] = "160"
    run = lambda args: subprocess.run([oppscore, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # noqa: E731
    demo = run(["demo", "--no-serve", "--n", "400"])
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    demo_files = {f.name: f.read_bytes() for f in (tmp_path / "demo-data").iterdir()}
    monkeypatch.chdir(tmp_path)  # the settings' relative home and champion folder, as the commands see them
    for name in ("MLFLOW_TRACKING_URI", "OPPSCORE_HOME", "OPPSCORE_CHAMPION_DIR"):
        monkeypatch.delenv(name, raising=False)
    demo_settings = load_settings(tmp_path / "demo-data" / "oppscore.toml")
    demo_champion = champion_version(demo_settings)
    for line in lines:
        done = run(shlex.split(line)[1:])
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    july = pd.read_csv(tmp_path / "scores-july.csv")
    assert july["previous_score"].notna().any() and july["why_changed"].notna().any()  # the second run says what changed
    assert (tmp_path / "weights.html").stat().st_size > 10_000 and (tmp_path / "forecast.html").exists()
    session = load_settings(tmp_path / "first-session" / "oppscore.toml")
    assert session.model_name == "oppscore-first-session" and champion_version(session) == "1"
    assert champion_version(demo_settings) == demo_champion == "1"
    assert {f.name: f.read_bytes() for f in (tmp_path / "demo-data").iterdir()} == demo_files
    assert ScoreHistory.of(demo_settings).previous(july["opportunity_id"].tolist(), pd.Timestamp("2030-01-01", tz="UTC")).empty
    again = run(["generate", "--out", "first-session", "--n", "300"])
    assert again.returncode == 1 and "--force" in again.stdout + again.stderr
