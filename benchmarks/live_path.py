"""The live path under real traffic (issue 39): events with duplicates from 8 clients, one deal on
/v1/score against the code before and the bare HTTP floor, and 500 clients at once.

    python benchmarks/live_path.py [--only events|latency|crowd] [--n 100000] [--events 50000]
                                   [--against f63d6a6] [--rounds 3] [--clients 500] [--seconds 60]

events: one `oppscore serve --data DIR --workers 1` (SQLite) serving `--n` generated deals; the
  same `--events` new activities sent twice, shuffled, in batches of 1,000 by 8 clients at once
  (every event checked against its deal on arrival), and, as issue 32 measured it, in batches of
  10,000 from one client. Events/s = events sent / wall time; every batch must be 2xx.
latency: `benchmarks/serving.py --only oppscore` of this tree and of `--against` (a git worktree
  of that commit, its own code and its own training), alternately `--rounds` times: one-deal
  p50/p99 and the /readyz floor of each run, and their ratios.
crowd: `--clients` connections at once, each sending 5-deal requests for `--seconds` to
  `oppscore serve --workers 2`: answers by status, connection errors (resets), p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serving import KEY, _percentiles, _port, _records, _wait  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


def _champion(tmp: Path):
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train
    from training.registry import log_and_register

    g = generate(n=3000, seed=5)
    settings = Settings(home=tmp / "home", champion_dir=tmp / "champion", segments=SegmentConfig(columns=g.segments))
    log_and_register(train(g.tables, StageOrder(g.stages), settings), g.tables, settings, "benchmark")
    env = {**os.environ, "OPPSCORE_HOME": str(tmp / "home"), "OPPSCORE_CHAMPION_DIR": str(tmp / "champion"), "OPPSCORE_API_KEYS": KEY,
           "MLFLOW_TRACKING_URI": settings.tracking_uri}
    return g, env


def _serve(tmp: Path, env: dict, workers: int, data: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = _port()
    args = [sys.executable, "-m", "oppscore.cli", "serve", "--workers", str(workers), "--port", str(port)] + (["--data", str(data)] if data else [])
    proc = subprocess.Popen(args, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/readyz", 300)
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def events(args) -> None:
    from features.loading import write_export
    from features.settings import settings_toml
    from features.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, env = _champion(tmp)
        served = generate(n=args.n, seed=9)
        write_export(served.tables, tmp / "export")
        (tmp / "export" / "oppscore.toml").write_text(settings_toml(served.stages, served.segments), encoding="utf-8")
        ids = served.tables.opportunities["opportunity_id"].to_numpy()
        end = served.tables.end
        rng = np.random.default_rng(0)
        results = {}
        for name, clients, batch in (("8 clients, batches of 1,000, every event twice", 8, 1_000), ("1 client, batches of 10,000, new events", 1, 10_000)):
            proc, url = _serve(tmp, {**env, "OPPSCORE_DATABASE_URL": f"sqlite:///{tmp / (str(clients) + '.db')}"}, workers=1, data=tmp / "export")
            try:
                httpx.get(f"{url}/v1/opportunities/{ids[0]}", headers=AUTH, timeout=600)  # the export read and scored once, before timing
                touched = rng.choice(ids, args.events)
                made = [{"event_id": f"{clients}-{k}", "table": "activities",
                         "row": {"opportunity_id": str(oid), "occurred_at": (end - np.timedelta64(int(rng.integers(0, 86_400 * 30)), "s")).isoformat(), "type": "call", "direction": "inbound"}}
                        for k, oid in enumerate(touched)]
                sent = made + made if clients > 1 else made
                random.Random(0).shuffle(sent)
                bodies = [json.dumps({"events": sent[i:i + batch]}).encode() for i in range(0, len(sent), batch)]

                def post(body: bytes, url=url) -> tuple[int, dict]:
                    r = httpx.post(f"{url}/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=600)
                    return r.status_code, (r.json() if r.status_code == 200 else {"error": r.text[:300]})

                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    answers = list(pool.map(post, bodies))
                seconds = time.perf_counter() - started
            finally:
                _stop(proc)
            ok = [a for status, a in answers if status == 200]
            results[name] = {"requests": len(bodies), "2xx": len(ok), "accepted": sum(a["accepted"] for a in ok), "duplicates": sum(a["duplicates"] for a in ok),
                             "seconds": round(seconds, 1), "events/s": round(len(sent) / seconds), "errors": [a for status, a in answers if status != 200][:3]}
    print(json.dumps(results, indent=1))
    print(f"\n{args.n:,} deals served, one worker, SQLite; {args.events:,} distinct events\n\n| run | requests | 2xx | accepted | duplicates | seconds | events/s |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['2xx']} | {r['accepted']:,} | {r['duplicates']:,} | {r['seconds']} | {r['events/s']:,} |")


def latency(args) -> None:
    """This tree's and `--against`'s serving benchmark, alternately, each on its own code."""
    reference = Path(tempfile.mkdtemp(prefix="oppscore-ref-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(reference), args.against], check=True, capture_output=True)
    clean = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # each run's own store, not one an earlier part of this run named
    runs: dict[str, list[dict]] = {args.against: [], "this tree": []}
    try:
        for _ in range(args.rounds):
            for name, tree in ((args.against, reference), ("this tree", ROOT)):
                for _attempt in range(3):  # the older harness times a worker still loading its model (a 503): such a run is run again
                    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "serving.py"), "--only", "oppscore", "--workers", str(args.workers),
                                           "--requests", str(args.requests), "--batches", "3"], env={**clean, "PYTHONPATH": str(tree)}, cwd=tree,
                                          capture_output=True, text=True, timeout=1800)
                    line = next((x for x in done.stdout.splitlines() if x.startswith("{") and "health check p50 / p99 ms" in x), None)
                    if line is not None:
                        break
                if line is None:
                    raise SystemExit(f"{name}: {done.stdout[-2000:]} {done.stderr[-2000:]}")
                runs[name].append(json.loads(line)["oppscore serve"])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(reference)], capture_output=True)
    print(f"\n`benchmarks/serving.py --only oppscore --workers {args.workers} --requests {args.requests}`, alternately\n")
    print("| round | code | one deal p50 ms | p99 ms | /readyz floor p50 ms | p50 ÷ floor |\n|---|---|---|---|---|---|")
    for k in range(args.rounds):
        for name in runs:
            r = runs[name][k]
            floor = float(r["health check p50 / p99 ms"].split(" / ")[0])
            print(f"| {k + 1} | {name} | {r['p50 ms']} | {r['p99 ms']} | {floor} | {r['p50 ms'] / floor:.1f} |")
    medians = {name: statistics.median(r["p50 ms"] for r in rs) for name, rs in runs.items()}
    print(f"\nmedian one-deal p50: {args.against} {medians[args.against]} ms, this tree {medians['this tree']} ms (ratio {medians['this tree'] / medians[args.against]:.2f})")


def crowd(args) -> None:
    """`--clients` connections at once for `--seconds`, from wrk (Debian's package: a client in C,
    so that the load, not the client, is measured; a Python client of 500 connections took a core
    and its own lag into the figures) or, without it, from asyncio and httpx."""
    import shutil

    from features.frame import open_points
    from features.stages import StageOrder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g, env = _champion(tmp)
        t = g.tables.end - np.timedelta64(90, "D")
        open_ids = open_points(g.tables, StageOrder(g.stages), t)["opportunity_id"].tolist()
        bodies = [json.dumps({"as_of": t.isoformat(), "opportunities": _records(g, 5, offset=5 * k, ids=open_ids)}).encode() for k in range(50)]
        proc, url = _serve(tmp, env, workers=int(os.environ.get("CROWD_WORKERS", "2")))
        try:
            if shutil.which("wrk"):
                _wrk(url, bodies[0], tmp, args.clients, args.seconds)
                return
            outcome = asyncio.run(_crowd(url, bodies, args.clients, args.seconds))
        finally:
            _stop(proc)
    ok = outcome["ms"].get(200, [])
    refused = outcome["ms"].get(503, [])
    every = [ms for values in outcome["ms"].values() for ms in values]
    print(json.dumps({"statuses": {k: len(v) for k, v in outcome["ms"].items()}, "connection errors": outcome["errors"]}, indent=1))
    print(f"\n{args.clients} clients (asyncio + httpx), 5 deals a request, {args.seconds} s, `oppscore serve --workers 2`\n")
    print("| answers | 200 | 503 (Retry-After) | other | connection errors (resets) | 200 p50 / p99 ms | every answer p50 / p99 ms | 200s/s |\n|---|---|---|---|---|---|---|---|")
    other = sum(len(v) for k, v in outcome["ms"].items() if k not in (200, 503))
    p = _percentiles(ok) if ok else ("-", "-")
    q = _percentiles(every) if every else ("-", "-")
    print(f"| {len(every)} | {len(ok)} | {len(refused)} | {other} | {sum(outcome['errors'].values())} | {p[0]} / {p[1]} | {q[0]} / {q[1]} | {len(ok) / args.seconds:.0f} |")


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open(os.getenv("OPPSCORE_BODY")):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OPPSCORE_KEY")
-- a client that honours Retry-After: after a 503 this connection waits a second (as a CRM's
-- integration does); without it, 500 connections resending at once measure the flood, not the service
local wait = 0
local pause = tonumber(os.getenv("OPPSCORE_WAIT_MS") or "1000")
function response(status, headers, body)
  if status == 503 then wait = pause else wait = 0 end
end
function delay()
  local d = wait
  wait = 0
  return d
end
"""


def _wrk(url: str, body: bytes, tmp: Path, clients: int, seconds: float) -> None:
    (tmp / "body.json").write_bytes(body)
    (tmp / "post.lua").write_text(WRK_SCRIPT)
    done = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "60s", "--latency", "-s", str(tmp / "post.lua"), f"{url}/v1/score"],
                          env={"OPPSCORE_WAIT_MS": "1000", **os.environ, "OPPSCORE_BODY": str(tmp / "body.json"), "OPPSCORE_KEY": KEY}, capture_output=True, text=True, timeout=seconds + 120)
    print(done.stdout)
    said = done.stdout
    total = int(_found(r"(\d+) requests in", said) or 0)
    not_ok = int(_found(r"Non-2xx or 3xx responses: (\d+)", said) or 0)
    errors = _found(r"Socket errors: (.*)", said) or "none"
    pct = {k: _found(rf"^\s+{k}%\s+(\S+)", said) for k in ("50", "90", "99")}
    print(f"\n{clients} clients (wrk), 5 deals a request, {seconds:.0f} s, `oppscore serve --workers 2`\n")
    print("| answers | 2xx | 503 (Retry-After) | socket errors (connect, read, write, timeout) | every answer p50 / p90 / p99 | answers/s |\n|---|---|---|---|---|---|")
    print(f"| {total} | {total - not_ok} | {not_ok} | {errors} | {pct['50']} / {pct['90']} / {pct['99']} | {total / seconds:.0f} |")


def _found(pattern: str, text: str) -> str | None:
    import re

    m = re.search(pattern, text, re.M)
    return m.group(1) if m else None


async def _crowd(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    ms: dict[int, list[float]] = {}
    errors: dict[str, int] = {}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers={**AUTH, "Content-Type": "application/json"}, timeout=120, limits=limits) as client:
            n = 0
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    r = await client.post("/v1/score", content=bodies[(k + n) % len(bodies)])
                    ms.setdefault(r.status_code, []).append((time.perf_counter() - started) * 1000)
                    if r.status_code == 503:
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                except httpx.TransportError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                n += 1

    await asyncio.gather(*(one(k) for k in range(clients)))
    return {"ms": ms, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["events", "latency", "crowd"])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--against", default="f63d6a6", help="the commit whose serving latency this tree is compared with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    for name, run in (("events", events), ("latency", latency), ("crowd", crowd)):
        if args.only in (None, name):
            run(args)


if __name__ == "__main__":
    main()
