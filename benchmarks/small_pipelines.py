"""Backtest quality and training time by pipeline size, the served model beside its baselines.

    python benchmarks/small_pipelines.py [--sizes 300 600 1200 3000 30000] [--logging after-the-fact live]

For each size and logging style, a generated world (`oppscore generate --logging …`) is trained
as `oppscore train` does (the rolling-origin backtest of every candidate, the refit); the pooled
backtest figures of the served model and of the configured weights, the stage rate, the
Odoo-style naive Bayes and the logistic regression are printed with their 90 % intervals (by
deal), with the training time. Targets (issue 13, 2 cores): ≤ 60 s at 3,000 deals, ≤ 3 min at
30,000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHOWN = ("model", "configured weights", "stage rate", "naive Bayes (stage + segments)", "logistic regression")


def _cell(m: dict, key: str) -> str:
    interval = m.get("interval_90", {}).get(key)
    return f"{m[key]:.3f} ({interval[0]:.3f}–{interval[1]:.3f})" if interval else f"{m[key]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 600, 1200, 3000, 30000])
    parser.add_argument("--logging", nargs="+", default=["after-the-fact", "live"])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from benchmarks.common import median_time, reference
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from features.synthetic import generate
    from training.pipeline import train

    print("| deals | logging | closed won / lost | folds | served | " + " | ".join(f"{n}: AUC / log loss / ECE" for n in SHOWN) + " | train s | reference s |")
    print("|" + "---|" * (6 + len(SHOWN) + 1))
    for logging in args.logging:
        for n in args.sizes:
            g = generate(n=n, seed=args.seed, logging=logging)
            ref_s, _ = median_time(reference(g.tables.activities), 3)
            start = time.perf_counter()
            result = train(g.tables, StageOrder(g.stages), Settings(segments=SegmentConfig(columns=g.segments)))
            took = time.perf_counter() - start
            win = result.metrics.get("win", {})
            cells = []
            for name in SHOWN:
                m = win.get(name)
                cells.append(f"{_cell(m, 'auc')} / {_cell(m, 'log_loss')} / {m['ece']:.3f}" if m else "n/a")
            served = result.bundle.metadata["served"]["win"]
            print(
                f"| {n} | {logging} | {result.counts['won']} / {result.counts['lost']} | {result.counts['win_folds']} | {served['model']} ({served['calibrator']}) | "
                + " | ".join(cells) + f" | {took:.1f} | {ref_s:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
