"""End-to-end training time and batch scoring throughput.

    python benchmarks/training.py [--n 30000] [--score 100000]

Targets (2 cores): training on 30k generated opportunities (snapshots, features, the
rolling-origin backtest of every candidate and baseline for both targets, the refit,
calibration, MLflow logging) ≤ 3 min (issue 13; issue 4 asked 90 s of the single time split);
batch scoring of 100k open opportunities with their factors ≤ 60 s. The scoring rows are open opportunities
at the snapshot times of the same export (each an opportunity open at its as_of).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--score", type=int, default=100_000)
    args = parser.parse_args()

    from benchmarks.common import median_time, peak_rss_gib, reference
    from features.settings import SegmentConfig, Settings
    from features.snapshots import snapshot_points
    from features.stages import StageOrder
    from features.synthetic import generate
    from scoring.score import score_points
    from training.pipeline import train
    from training.registry import log_and_register

    g = generate(n=args.n, seed=42)
    stages = StageOrder(g.stages)
    ref_s, _ = median_time(reference(g.tables.activities), 3)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / ".oppscore", champion_dir=Path(tmp) / "champion", segments=SegmentConfig(columns=g.segments))
        start = time.perf_counter()
        result = train(g.tables, stages, settings, workdir=Path(tmp) / "plots")
        fit_s = time.perf_counter() - start
        log_and_register(result, g.tables, settings, "benchmark")
        total_s = time.perf_counter() - start
    points = snapshot_points(g.tables, stages).sample(n=min(args.score, 10**9), replace=True, random_state=0).reset_index(drop=True)
    start = time.perf_counter()
    scored = score_points(result.bundle, g.tables, points)
    score_s = time.perf_counter() - start
    row = {
        "opportunities": args.n,
        "activities": len(g.tables.activities),
        "snapshots": result.counts["snapshots"],
        "train s (no MLflow)": round(fit_s, 1),
        "train + MLflow s": round(total_s, 1),
        "scored rows": len(scored),
        "scoring with factors s": round(score_s, 1),
        "rows/s": round(len(scored) / score_s),
        "reference s": round(ref_s, 3),
        "train ratio to reference": round(total_s / ref_s),
        "peak GiB": round(peak_rss_gib(), 2),
        "win AUC model / stage rate (backtest)": f"{result.metrics['win']['model']['auc']:.3f} / {result.metrics['win']['stage rate']['auc']:.3f}",
        "served": result.bundle.metadata["served"]["win"]["model"],
    }
    print(json.dumps(row))
    print("\n| " + " | ".join(row) + " |\n|" + "---|" * len(row))
    print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
