"""Events in and scores by record id, on a service serving 100k opportunities.

    python benchmarks/live_scores.py [--n 100000] [--events 50000] [--gets 2000]

One `oppscore serve --data DIR --workers 1` on localhost serves an export of `--n` generated
opportunities with a champion trained here on 3,000 others (same stages and segments). Measured
one request at a time from one client:
- GET /v1/opportunities/{id} of random ids (open and closed deals), p50/p99, beside GET /healthz
  on the same connection (the floor of client, HTTP and framework);
- POST /v1/events in batches of 10,000 new activities (`--events` in all): events stored per
  second, each batch one request;
- GET /v1/opportunities/{id} of deals that just received events (scored alone, with them laid
  over), the first call and the next.
Targets (issue 32): ≥ 10,000 events/s on one worker; p99 ≤ 20 ms with 100k deals served.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serving import KEY, _percentiles, _port, _wait  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}
BATCH = 10_000


def _timed(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.request(method, url, **kwargs)
    return (time.perf_counter() - start) * 1000, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--gets", type=int, default=2000)
    args = parser.parse_args()
    from features.loading import write_export
    from features.settings import SegmentConfig, Settings, settings_toml
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train
    from training.registry import log_and_register

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        g = generate(n=3000, seed=5)
        settings = Settings(home=home, champion_dir=tmp / "champion", segments=SegmentConfig(columns=g.segments))
        log_and_register(train(g.tables, StageOrder(g.stages), settings), g.tables, settings, "benchmark")
        served = generate(n=args.n, seed=9)
        write_export(served.tables, tmp / "export")
        (tmp / "export" / "oppscore.toml").write_text(settings_toml(served.stages, served.segments), encoding="utf-8")
        ids = served.tables.opportunities["opportunity_id"].to_numpy()
        end = served.tables.end
        env = {**os.environ, "OPPSCORE_HOME": str(home), "OPPSCORE_CHAMPION_DIR": str(tmp / "champion"), "OPPSCORE_API_KEYS": KEY,
               "MLFLOW_TRACKING_URI": settings.tracking_uri, "OPPSCORE_DATABASE_URL": f"sqlite:///{tmp / 'live.db'}"}
        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "oppscore.cli", "serve", "--data", str(tmp / "export"), "--workers", "1", "--port", str(port)],
                                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url + "/readyz", 300)
            with httpx.Client(base_url=url, headers=AUTH, timeout=600) as client:
                start = time.perf_counter()
                assert client.get(f"/v1/opportunities/{ids[0]}").status_code == 200
                first = time.perf_counter() - start
                gets, floor = [], []
                for oid in rng.choice(ids, args.gets):
                    ms, r = _timed(client, "GET", f"/v1/opportunities/{oid}")
                    assert r.status_code == 200, r.text
                    gets.append(ms)
                    floor.append(_timed(client, "GET", "/healthz")[0])
                posted, seconds = 0, 0.0
                touched = rng.choice(ids, args.events)
                for b in range(0, args.events, BATCH):
                    events = [{"event_id": f"bench-{b + k}", "table": "activities",
                               "row": {"opportunity_id": str(oid), "occurred_at": (end + np.timedelta64(b + k, "s")).isoformat(), "type": "call", "direction": "inbound"}}
                              for k, oid in enumerate(touched[b:b + BATCH])]
                    ms, r = _timed(client, "POST", "/v1/events", content=json.dumps({"events": events}), headers={**AUTH, "Content-Type": "application/json"})
                    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text[:500]
                    posted += len(events)
                    seconds += ms / 1000
                live_first, live_again = [], []
                for oid in rng.choice(touched, min(args.gets, 500), replace=False):
                    live_first.append(_timed(client, "GET", f"/v1/opportunities/{oid}")[0])
                    live_again.append(_timed(client, "GET", f"/v1/opportunities/{oid}")[0])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    p50, p99 = _percentiles(gets)
    f50, f99 = _percentiles(floor)
    l50, l99 = _percentiles(live_first)
    a50, a99 = _percentiles(live_again)
    print(f"\n{args.n:,} opportunities served (one worker); first GET by id (scores the export): {first:.1f} s")
    print("\n| measure | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| GET /v1/opportunities/{{id}} (export, {len(gets)} random ids) | {p50} | {p99} |")
    print(f"| GET /healthz (the floor, same connection) | {f50} | {f99} |")
    print(f"| GET by id after its events: first call ({len(live_first)} deals) | {l50} | {l99} |")
    print(f"| the same again (kept) | {a50} | {a99} |")
    print(f"\nPOST /v1/events: {posted:,} events in {posted // BATCH} requests of {BATCH:,}: {posted / seconds:,.0f} events/s")


if __name__ == "__main__":
    main()
