"""What the served booster gains from more rows: at the last fold date of each target, a booster
of a fixed number of rounds fitted on growing samples of whole deals (the same stable hash the
pipeline samples with), judged on the deals open at that date against their outcomes at the
export's end. The figures behind `training.pipeline.BOOSTER_ROWS`.

    python benchmarks/booster_rows.py [--deals 300000] [--partitions 16] [--rounds 300] [--data PARTITION_FOLDER]

Without `--data`, the export is generated as `benchmarks/scale.py` generates it (in a temporary
folder, removed afterwards). One fold date and one held-out set: read the differences beside
the run-to-run spread of an AUC on about 15,000 rows (a few thousandths).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = [150_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--data", type=Path, help="a partition folder (`oppscore partition`) instead of a generated export")
    args = parser.parse_args()
    from benchmarks.scale import partition_folder

    with partition_folder(args.data, args.deals, args.partitions, "oppscore-booster-rows-") as folder:
        _measure(folder, args.rounds)


def _measure(folder: Path, rounds: int) -> None:
    from analytics.metrics import metrics
    from engines.runner import runner
    from engines.work import stages_of
    from features.settings import load_settings
    from features.times import utc_now
    from training import backtest as bt_
    from training import fitting as fit
    from training import labels
    from training.partitioned import PartitionedExport

    settings = load_settings(folder / "oppscore.toml")
    stages = stages_of(settings)
    with runner("local") as run:
        source = PartitionedExport(run, folder, settings, utc_now())
        spec, stats = source.spec_and_stats(stages, settings)
        snaps = source.snapshots(stages, settings, spec, stats, lambda _m: None)
    targets = {"win": labels.win_target(source.tables, stages, snaps, source.end, settings.snapshots.every_days, settings.win.horizon_days)[0], "stall": labels.stall_target(snaps, source.end)}
    print(f"{len(source.tables.opportunities):,} deals, {len(snaps):,} snapshots, {rounds} rounds\n")
    print("| target | fold date | training rows | AUC | log loss | seconds |\n|---|---|---|---|---|---|")
    for name, target in targets.items():
        at = bt_.fold_dates(target, snaps)[-1]
        every = target.train(at).sample(len(snaps))  # every used row
        rows, y, w = target.evaluate(at)
        held = snaps.x[rows]
        for limit in [s for s in SIZES if s < len(every.y)] + [len(every.y)]:
            start = time.perf_counter()
            sample = every.sample(limit)
            model = fit.fit_booster(sample.rows(snaps.x), spec, rounds).model
            got = metrics(y, model.probability(held), w)
            print(f"| {name} | {at.date()} | {len(sample.y):,} | {got['auc']:.4f} | {got['log_loss']:.4f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
