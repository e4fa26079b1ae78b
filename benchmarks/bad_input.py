"""What bad input costs the service: time and memory spent on requests it must refuse.

    python benchmarks/bad_input.py [--repeat 20]

One `oppscore serve` worker on localhost with a champion trained here (300 generated deals).
Sent one at a time, `--repeat` times each: 300,000 and 1,000,000 invalid items (with a key:
413 before any item is validated), 999 invalid items (within the batch limit: a 422 capped at
100 problems), malformed JSON without a key (401 before the body is read), and a health check
as the reference measured in the same run. Reported: median and worst latency, the answer's
size, and the growth of the worker's peak resident memory (VmHWM) over the whole series.
Targets (issue 14): < 100 ms and < 10 MB for the 300k batch; 401 without a key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serving import KEY, _port, _wait  # noqa: E402


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train
    from training.registry import log_and_register

    g = generate(n=300, seed=3)
    as_of = g.tables.end.isoformat()
    cases = {
        "300,000 invalid items, key": (b'{"as_of":"%s","opportunities":[%s]}' % (as_of.encode(), b",".join([b"1"] * 300_000)), True),
        "1,000,000 invalid items, key": (b'{"as_of":"%s","opportunities":[%s]}' % (as_of.encode(), b",".join([b"1"] * 1_000_000)), True),
        "999 invalid items, key": (b'{"as_of":"%s","opportunities":[%s]}' % (as_of.encode(), b",".join([b'{"amount":true}'] * 999)), True),
        "malformed JSON, no key": (b'{"as_of": "2025-01-01", "opportunities": [', False),
        "health check (reference)": (None, False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".oppscore"
        settings = Settings(home=home, champion_dir=Path(tmp) / "champion", segments=SegmentConfig(columns=g.segments))
        log_and_register(train(g.tables, StageOrder(g.stages), settings), g.tables, settings, "benchmark")
        env = {**os.environ, "OPPSCORE_HOME": str(home), "OPPSCORE_CHAMPION_DIR": str(Path(tmp) / "champion"), "OPPSCORE_API_KEYS": KEY}
        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "oppscore.cli", "serve", "--port", str(port)], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        rows = []
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(f"{url}/readyz", 180)
            with httpx.Client(base_url=url, timeout=60) as client:
                client.get("/healthz")
                for name, (body, keyed) in cases.items():
                    headers = {"content-type": "application/json", **({"Authorization": f"Bearer {KEY}"} if keyed else {})}
                    before = _peak_kib(proc.pid)
                    ms, status, size = [], None, 0
                    for _ in range(args.repeat):
                        start = time.perf_counter()
                        r = client.get("/healthz") if body is None else client.post("/v1/score", content=body, headers=headers)
                        ms.append((time.perf_counter() - start) * 1000)
                        status, size = r.status_code, len(r.content)
                    rows.append({
                        "request": name, "body": f"{len(body or b'') / 1e6:.2f} MB", "status": status,
                        "median ms": round(statistics.median(ms), 1), "worst ms": round(max(ms), 1),
                        "answer bytes": size, "peak memory growth MB": round((_peak_kib(proc.pid) - before) / 1024, 1),
                    })
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps(rows))
    reference = next(r["median ms"] for r in rows if r["request"].startswith("health"))
    print(f"\n{args.repeat} requests each, one worker, sent one at a time\n")
    print("| request | body | status | median ms | worst ms | × health check | answer bytes | peak memory growth MB |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['request']} | {r['body']} | {r['status']} | {r['median ms']} | {r['worst ms']} | {r['median ms'] / reference:.1f} | {r['answer bytes']:,} | {r['peak memory growth MB']} |")


if __name__ == "__main__":
    main()
