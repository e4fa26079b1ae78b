"""Training time and peak memory of one process on a generated export, as `oppscore train` runs it
(without the MLflow logging).

    python benchmarks/train_time.py [--n 30000] [--logging after-the-fact] [--seed 7] [--repeat 3] [--data EXPORT]

Each repeat trains on the same export; printed: every run's seconds, their median, the peak
resident memory of this process (the imports and the generated export included, both measured
alone first) and what serves. With `--data` (an export folder, e.g. from `oppscore generate`) the
export is read as `oppscore train` reads it, so the peak is reading and training, and the
training's memory per deal is printed. To compare two versions of the code, run this file from a clone of
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
    parser.add_argument("--data", type=Path, help="an export folder to read instead of generating one")
    args = parser.parse_args()

    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train

    imports = _peak_gib()
    if args.data is not None:
        from features.contract import load_export
        from features.settings import load_settings
        from features.times import utc_now

        settings = load_settings(args.data / "oppscore.toml")
        validated = load_export(args.data, settings, utc_now())
        tables, stages = validated.tables, validated.stages
        args.n, args.logging = len(tables.opportunities), str(args.data)
    else:
        g = generate(n=args.n, seed=args.seed, logging=args.logging)
        settings = Settings(segments=SegmentConfig(columns=g.segments))
        tables, stages = g.tables, StageOrder(g.stages)
    generated = _peak_gib()
    seconds, served = [], ""
    for k in range(args.repeat):
        t = time.perf_counter()
        result = train(tables, stages, settings)
        seconds.append(time.perf_counter() - t)
        served = result.bundle.metadata["served"]["win"]["model"]
        print(f"run {k + 1}: {seconds[-1]:.1f} s", flush=True)
    print(f"{args.n:,} deals ({args.logging}): median {statistics.median(seconds):.1f} s over {args.repeat} runs; "
          f"peak {_peak_gib():.2f} GiB (imports {imports:.2f}, with the export {generated:.2f}; {(_peak_gib() - imports) * 2**20 / args.n:.1f} KB per deal above the imports); win served by {served}")


if __name__ == "__main__":
    main()
