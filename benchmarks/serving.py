"""Latency and throughput of `oppscore serve` beside `mlflow models serve` of the same bundle.

    python benchmarks/serving.py [--requests 300] [--batches 30]

Both servers run on localhost in this run, one after the other, on the same registered
version (trained here on 3,000 generated opportunities). Measured: p50/p99 latency of
one-opportunity requests (sequential), and opportunities per second with batches of 100.
Every opportunity sent is open at the request's as_of, so every one is scored with reasons.
Targets (issue 5, 2 cores): p99 ≤ 25 ms for one opportunity; ≥ 1,000 opportunities/s with
batches of 100; ahead of `mlflow models serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-key"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def _records(g, n: int, offset: int = 0, ids: list[str] | None = None) -> list[dict]:
    t = g.tables
    ids = pd.Index(ids if ids is not None else t.opportunities["opportunity_id"])
    ids = ids[[(offset + i) % len(ids) for i in range(n)]]
    hist = t.stage_history[t.stage_history["opportunity_id"].isin(ids)]
    acts = t.activities[t.activities["opportunity_id"].isin(ids)]
    out = []
    by_id = t.opportunities.set_index("opportunity_id", drop=False)
    for k, oid in enumerate(ids):
        opp = by_id.loc[oid].to_dict()
        rec = {c: opp[c] for c in ("amount", "account_id", "owner_id", "team", "industry", "region", "source", "company_size")}
        rec["opportunity_id"] = f"{oid}#{k}"  # unique within a batch even when the open set is reused
        rec["created_at"] = opp["created_at"].isoformat()
        h = hist[hist["opportunity_id"] == oid]
        rec["stage_history"] = [{"stage": s, "entered_at": e.isoformat()} for s, e in zip(h["stage"], h["entered_at"], strict=True)]
        a = acts[acts["opportunity_id"] == oid]
        rec["activities"] = [{"occurred_at": o.isoformat(), "type": ty, "direction": d} for o, ty, d in zip(a["occurred_at"], a["type"], a["direction"], strict=True)]
        out.append(rec)
    return out


def measure(post, singles: list, batches: list) -> dict:
    for body in singles[:10]:
        post(body)  # warm up
    lat = []
    for body in singles:
        start = time.perf_counter()
        post(body)
        lat.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    n = 0
    for body in batches:
        n += post(body)
    elapsed = time.perf_counter() - start
    lat.sort()
    return {"p50 ms": round(statistics.median(lat), 1), "p99 ms": round(lat[int(0.99 * (len(lat) - 1))], 1), "opps/s (batches of 100)": round(n / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()

    from features.frame import open_points
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train
    from training.registry import log_and_register

    g = generate(n=3000, seed=9)
    t = g.tables.end - pd.Timedelta(days=90)  # every deal sent is open at as_of, so every one is scored
    as_of = t.isoformat()
    open_ids = open_points(g.tables, StageOrder(g.stages), t)["opportunity_id"].tolist()
    singles_recs = _records(g, args.requests, ids=open_ids)
    batch_recs = [_records(g, 100, offset=i * 100, ids=open_ids) for i in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".oppscore"
        settings = Settings(home=home, champion_dir=Path(tmp) / "champion", segments=SegmentConfig(columns=g.segments))
        log_and_register(train(g.tables, StageOrder(g.stages), settings), g.tables, settings, "benchmark")
        env = {**os.environ, "OPPSCORE_HOME": str(home), "OPPSCORE_CHAMPION_DIR": str(Path(tmp) / "champion"), "OPPSCORE_API_KEYS": KEY, "MLFLOW_TRACKING_URI": settings.tracking_uri,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs uvicorn by name
        results = {}

        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "oppscore.cli", "serve", "--port", str(port)], env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}/readyz")
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

            def post_ours(recs):
                r = client.post("/v1/score", json={"as_of": as_of, "opportunities": recs})
                r.raise_for_status()
                return len(r.json()["scores"])

            results["oppscore serve"] = measure(post_ours, [[r] for r in singles_recs], batch_recs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/oppscore/1", "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
                                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}/ping", 180)
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

            def post_mlflow(recs):
                rows = [{**r, "as_of": as_of} for r in recs]
                r = client.post("/invocations", json={"dataframe_records": rows})
                r.raise_for_status()
                return len(r.json()["predictions"])

            results["mlflow models serve"] = measure(post_mlflow, [[r] for r in singles_recs], batch_recs)
        except Exception as exc:  # noqa: BLE001 - report what happened rather than a half table
            results["mlflow models serve"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(results))
    cols = ["p50 ms", "p99 ms", "opps/s (batches of 100)"]
    print("\n| server | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |")
    ours, theirs = results.get("oppscore serve", {}), results.get("mlflow models serve", {})
    if "p50 ms" in theirs:
        print(f"\nratio mlflow/oppscore p50: {theirs['p50 ms'] / ours['p50 ms']:.2f}; throughput oppscore/mlflow: {ours['opps/s (batches of 100)'] / theirs['opps/s (batches of 100)']:.2f}")


if __name__ == "__main__":
    main()
