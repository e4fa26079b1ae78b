"""Wall time and peak memory of training snapshots + features, and of `features` at one time.

    python benchmarks/features.py [--sizes 30000 300000] [--repeat 3]

Targets (issue 3, 2 cores): 30k opportunities (≈ 400k activities) ≤ 15 s for the training
snapshots and features; 300k ≤ 3 min and ≤ 6 GiB. Each size runs in its own process so the
peak memory is that size's alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_size(n: int, repeat: int) -> dict:
    from benchmarks.common import median_time, peak_rss_gib, reference
    from features.frame import build_features, make_spec, open_points
    from features.pit_stats import PointInTimeStats
    from features.snapshots import snapshot_points
    from features.stages import StageOrder
    from features.synthetic import generate

    g = generate(n=n, seed=42)
    t, stages = g.tables, StageOrder(g.stages)

    def cold() -> None:  # tables cache their index; every timed run pays for building it
        t.__dict__.pop("index", None)
        t._columns.clear()  # and the arrays beneath the frames, which the index reads

    def training() -> int:
        cold()
        spec = make_spec(t, stages, g.segments)
        stats = PointInTimeStats(spec.stat_keys).fit(t, stages)
        points = snapshot_points(t, stages, every_days=7)
        return len(build_features(t, points, spec, stats))

    spec = make_spec(t, stages, g.segments)
    stats = PointInTimeStats(spec.stat_keys).fit(t, stages)

    def at_end() -> int:
        cold()
        return len(build_features(t, open_points(t, stages, t.end), spec, stats))

    ref_s, _ = median_time(reference(t.activities), repeat)
    train_s, rows = median_time(training, repeat)
    end_s, open_rows = median_time(at_end, repeat)
    return {
        "opportunities": n,
        "activities": len(t.activities),
        "snapshots": rows,
        "snapshots+features s": round(train_s, 2),
        "open at end": open_rows,
        "features at end s": round(end_s, 2),
        "reference s": round(ref_s, 3),
        "ratio to reference": round(train_s / ref_s, 1),
        "peak GiB": round(peak_rss_gib(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.repeat)))
        return
    rows = []
    for n in args.sizes:
        repeat = args.repeat if n <= 50_000 else 1
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--repeat", str(repeat)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
