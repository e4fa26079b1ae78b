"""Training time and peak memory of one process on a generated export, as `oppscore train` runs it
(without the MLflow logging).

    python benchmarks/train_time.py [--n 30000] [--logging after-the-fact] [--seed 7] [--repeat 3]

Each repeat trains on the same export; printed: every run's seconds, their median, the peak
resident memory of this process (the imports and the generated export included, both measured
alone first) and what serves. To compare two versions of the code, run this file from a clone of
each, alternately, on the same machine (what RESULTS.md's issue-30 section did).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--logging", default="after-the-fact")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train

    imports = _peak_gib()
    g = generate(n=args.n, seed=args.seed, logging=args.logging)
    generated = _peak_gib()
    settings = Settings(segments=SegmentConfig(columns=g.segments))
    seconds, served = [], ""
    for k in range(args.repeat):
        t = time.perf_counter()
        result = train(g.tables, StageOrder(g.stages), settings)
        seconds.append(time.perf_counter() - t)
        served = result.bundle.metadata["served"]["win"]["model"]
        print(f"run {k + 1}: {seconds[-1]:.1f} s", flush=True)
    print(f"{args.n:,} deals ({args.logging}): median {statistics.median(seconds):.1f} s over {args.repeat} runs; "
          f"peak {_peak_gib():.2f} GiB (imports {imports:.2f}, with the export {generated:.2f}); win served by {served}")


if __name__ == "__main__":
    main()
