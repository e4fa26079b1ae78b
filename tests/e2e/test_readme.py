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


def test_the_readme_session_runs_as_written(tmp_path: Path) -> None:
    lines = _session()
    assert len(lines) >= 8
    oppscore = str(Path(sys.executable).with_name("oppscore"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPPSCORE_HOME", "OPPSCORE_API_KEYS")}
    env["COLUMNS"] = "160"
    for line in lines:
        args = shlex.split(line)
        done = subprocess.run([oppscore, *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    july = pd.read_csv(tmp_path / "scores-july.csv")
    assert july["previous_score"].notna().any() and july["why_changed"].notna().any()  # the second run says what changed
    assert (tmp_path / "weights.html").stat().st_size > 10_000 and (tmp_path / "forecast.html").exists()
