"""Outputs before and after a change that should not change them (issue 41: the rooms change,
the behaviour stays).

Each revision is checked out in its own git worktree and run with this environment's Python on
two exports: a generated one and Salesforce's dev-org sample as imported by that revision. Per
export: the imported tables, `train` (the champion's bundle: its models, weights, grades and
record, less what names the run), `score`, `stage-weights`, `funnel` and `forecast` as JSON,
and the API's answers to `POST /v1/score` and `GET /v1/opportunities/{id}`. Prints, per output,
"same" or the first keys that differ.

    python benchmarks/parity.py --before 4cffa14 --after HEAD
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVORG = ROOT.parent / "shared" / "datasets" / "salesforce-devorg-sample"
RUN_SPECIFIC = {"trained_at", "run_id", "mlflow_run_id", "data_path", "created_at", "made_at", "registered_at"}
API = r'''
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from features.settings import load_settings
from serving.app import create_app
data = Path(sys.argv[1])
settings = load_settings(data / "oppscore.toml").model_copy(update={"api_keys": ["k"]})
auth = {"Authorization": "Bearer k"}
with TestClient(create_app(settings, data=data, start_reloader=False)) as c:
    deals = c.get("/v1/pipeline", headers=auth).json()["deals"]
    one = c.get(f"/v1/opportunities/{deals[0]['opportunity_id']}", headers=auth).json()
    print(json.dumps({"pipeline": [{k: d[k] for k in ("opportunity_id", "win_probability", "stall_risk", "score", "grade", "top_factors")} for d in deals], "one": one}, default=str))
'''


def _run(rev_dir: Path, work: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(rev_dir), "OPPSCORE_HOME": str(work / ".oppscore"), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{rev_dir.name}: {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def _outputs(rev_dir: Path, work: Path, generated: Path) -> dict[str, object]:
    """Every output of one revision, keyed by what it is."""
    cli = ["-m", "oppscore.cli"]
    shutil.copytree(generated, work / "gen")
    _run(rev_dir, work, [*cli, "import", "salesforce", str(DEVORG), "--out", "devorg"])
    got: dict[str, object] = {}
    for name in ("gen", "devorg"):
        for table in sorted((work / name).glob("*.csv")):
            got[f"{name}: table {table.stem}"] = table.read_text(encoding="utf-8")
        _run(rev_dir, work, [*cli, "train", "--data", name])
        bundle = json.loads(max((work / "models").glob("**/champion/bundle.json"), key=lambda f: f.stat().st_mtime).read_text())  # the one just trained
        got[f"{name}: bundle"] = _without_run(bundle)
        _run(rev_dir, work, [*cli, "score", "--data", name, "--out", f"{name}-scores.csv"])
        got[f"{name}: scores"] = (work / f"{name}-scores.csv").read_text(encoding="utf-8")
        for command, extra in (("stage-weights", []), ("funnel", []), ("forecast", ["--period", "next-30d"])):
            _run(rev_dir, work, [*cli, command, "--data", name, *extra, "--out", f"{name}-{command}.json"])
            got[f"{name}: {command}"] = json.loads((work / f"{name}-{command}.json").read_text())
        got[f"{name}: API"] = json.loads(_run(rev_dir, work, ["-c", API, str(work / name)]).stdout)
    return got


def _without_run(doc):
    if isinstance(doc, dict):
        return {k: _without_run(v) for k, v in doc.items() if k not in RUN_SPECIFIC}
    if isinstance(doc, list):
        return [_without_run(v) for v in doc]
    return doc


def _differences(a, b, path: str = "", out: list[str] | None = None) -> list[str]:
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only {'after' if k not in a else 'before'}")
            else:
                _differences(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _differences(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {str(a)[:80]!r} → {str(b)[:80]!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--n", type=int, default=800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generated = tmp / "generated"
        subprocess.run([sys.executable, "-m", "oppscore.cli", "generate", "--out", str(generated), "--n", str(args.n)], check=True, capture_output=True, cwd=ROOT)
        outputs = {}
        for label, rev in (("before", args.before), ("after", args.after)):
            rev_dir = tmp / label
            subprocess.run(["git", "worktree", "add", "--detach", str(rev_dir), rev], check=True, capture_output=True, cwd=ROOT)
            try:
                (tmp / f"{label}-work").mkdir()
                outputs[label] = _outputs(rev_dir, tmp / f"{label}-work", generated)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(rev_dir)], capture_output=True, cwd=ROOT)
        print(f"| output | {args.before} → {args.after} |\n|---|---|")
        for key in outputs["before"]:
            diff = _differences(outputs["before"][key], outputs["after"].get(key))
            print(f"| {key} | {'same' if not diff else '; '.join(diff[:4]) + (f' (+{len(diff) - 4} more)' if len(diff) > 4 else '')} |")


if __name__ == "__main__":
    main()
