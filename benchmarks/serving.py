"""Latency and throughput of `oppscore serve` beside `mlflow models serve` of the same bundle.

    python benchmarks/serving.py [--requests 300] [--batches 30] [--workers 2] [--clients 2]

Both servers run on localhost in this run, one after the other, on the same registered
version (trained here on 3,000 generated opportunities), with the same number of workers.
Measured, for one-opportunity requests and for batches of 100: p50/p99 latency sent one at a
time, and throughput one at a time and from concurrent connections (the client shares the
machine's cores with the server, as on a 2-core box). Each one-opportunity request is
followed by a health check, whose latency is the floor of client, HTTP and framework.
Every opportunity sent is open at the request's as_of, so every one is scored with reasons.
Targets (issue 5, 2 cores): p99 ≤ 25 ms for one opportunity; ≥ 1,000 opportunities/s with
batches of 100; ahead of `mlflow models serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def _wait(url: str, seconds: float = 120, in_a_row: int = 20) -> None:
    """Until `in_a_row` checks on new connections in a row say ready: each connection goes to one
    worker, and a server of several is ready when all are (one still loading its model answers
    503, as it should; a timed request must not meet it)."""
    deadline, ready = time.time() + seconds, 0
    while time.time() < deadline:
        try:
            ready = ready + 1 if httpx.get(url, timeout=1).status_code < 500 else 0
        except httpx.TransportError:
            ready = 0
        if ready >= in_a_row:
            return
        time.sleep(0.05 if ready else 0.5)
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


def _percentiles(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return round(statistics.median(ms), 1), round(ms[int(0.99 * (len(ms) - 1))], 1)


def measure(url: str, path: str, ping: str, headers: dict, count, singles: list[bytes], batches: list[bytes], clients: int) -> dict:
    """Latency and throughput of one-opportunity requests and of batches of 100: each sent one
    at a time on one connection (latency; throughput = requests / time spent in them), then
    all again from `clients` concurrent connections (throughput). Request bodies are encoded
    beforehand; decoding the answer is timed, as a client must. Each one-opportunity request is
    followed by a health check on the same connection: the floor (client, HTTP, server
    framework) at that moment, which tells a slow server from a busy machine."""
    headers = {**headers, "content-type": "application/json"}

    def post(client: httpx.Client, body: bytes) -> int:
        r = client.post(path, content=body)
        if r.is_error:
            raise SystemExit(f"{path}: {r.status_code} {r.text[:500]}")
        return count(r.json())

    def timed(client: httpx.Client, body: bytes) -> tuple[int, float]:
        start = time.perf_counter()
        n = post(client, body)
        return n, (time.perf_counter() - start) * 1000

    def concurrently(bodies: list[bytes]) -> float:
        def share(k: int) -> int:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as own:
                return sum(post(own, body) for body in bodies[k::clients])

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            n = sum(pool.map(share, range(clients)))
        return n / (time.perf_counter() - start)

    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for body in singles[:10] + batches[:2]:
            post(client, body)  # warm up
        single_ms, floor_ms = [], []
        for body in singles:
            single_ms.append(timed(client, body)[1])
            start = time.perf_counter()
            client.get(ping).raise_for_status()
            floor_ms.append((time.perf_counter() - start) * 1000)
        batch = [timed(client, body) for body in batches]
    batch_ms = [ms for _, ms in batch]
    p50, p99 = _percentiles(single_ms)
    floor50, floor99 = _percentiles(floor_ms)
    batch50, batch99 = _percentiles(batch_ms)
    return {
        "p50 ms": p50,
        "p99 ms": p99,
        "health check p50 / p99 ms": f"{floor50} / {floor99}",
        "1-opp requests/s, one at a time": round(len(single_ms) / (sum(single_ms) / 1000)),
        f"1-opp requests/s, {clients} clients": round(concurrently(singles)),
        "batch of 100 p50 / p99 ms": f"{batch50} / {batch99}",
        "opps/s, batches of 100, one at a time": round(sum(n for n, _ in batch) / (sum(batch_ms) / 1000)),
        f"opps/s, batches of 100, {clients} clients": round(concurrently(batches)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="server workers, for both servers (2 cores: 2)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent connections for the second throughput figure")
    parser.add_argument("--only", choices=["oppscore", "mlflow"], help="run one server (a quick check; the comparison needs both)")
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

        singles = [json.dumps({"as_of": as_of, "opportunities": [r]}).encode() for r in singles_recs]
        batches = [json.dumps({"as_of": as_of, "opportunities": recs}).encode() for recs in batch_recs]
        servers = {
            "oppscore serve": (["-m", "oppscore.cli", "serve", "--workers", str(args.workers)], "/readyz", "/v1/score", {"Authorization": f"Bearer {KEY}"},
                               lambda answer: len(answer["scores"]), singles, batches),
            "mlflow models serve": (["-m", "mlflow", "models", "serve", "-m", "models:/oppscore/1", "--env-manager", "local", "-h", "127.0.0.1", "-w", str(args.workers)],
                                    "/ping", "/invocations", {}, lambda answer: len(answer["predictions"]),
                                    [json.dumps({"dataframe_records": [{**r, "as_of": as_of}]}).encode() for r in singles_recs],
                                    [json.dumps({"dataframe_records": [{**r, "as_of": as_of} for r in recs]}).encode() for recs in batch_recs]),
        }
        for name, (command, ready, path, headers, count, these_singles, these_batches) in servers.items():
            if args.only and not name.startswith(args.only):
                continue
            port = _port()
            proc = subprocess.Popen([sys.executable, *command, "--port" if name == "oppscore serve" else "-p", str(port)], env=env, cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                _wait(f"http://127.0.0.1:{port}{ready}", 180)
                results[name] = measure(f"http://127.0.0.1:{port}", path, ready, headers, count, these_singles, these_batches, args.clients)
            except Exception as exc:  # noqa: BLE001 - report what happened rather than a half table
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            finally:
                os.killpg(proc.pid, signal.SIGTERM)  # the workers too
                proc.wait(timeout=30)
    print(json.dumps(results))
    cols = list(next((r for r in results.values() if "p50 ms" in r), {"p50 ms": 0}).keys())
    print(f"\n{args.workers} workers per server; {args.requests} one-opportunity requests, {args.batches} batches of 100")
    print("\n| server | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |")
    ours, theirs = results.get("oppscore serve", {}), results.get("mlflow models serve", {})
    if "p50 ms" in theirs and "p50 ms" in ours:
        ratios = [f"p50 latency mlflow/oppscore {theirs['p50 ms'] / ours['p50 ms']:.2f}"]
        ratios += [f"{c} oppscore/mlflow {ours[c] / theirs[c]:.2f}" for c in cols if "/s," in c]
        print("\nratios in this run: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
