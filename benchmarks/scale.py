"""One machine against Dask: `oppscore features`, `score` and `train` on large exports, the whole
export in one process against the same export in partitions on a LocalCluster of two workers
with a memory limit.

    python benchmarks/scale.py [--sizes 100000 300000] [--commands features score train] [--partitions 16] [--memory-limit 2GiB] [--skip-one]

Each size's export is generated partition by partition (a generator of n/P deals per
partition, ids prefixed by the partition; accounts and owners shared across partitions) and
also written whole (not with `--skip-one`). Each command runs in its own process tree; its peak memory is sampled
every 0.2 s as the sum of the resident memory of the process and all its children (Dask's
scheduler and workers included), with the largest single worker beside it. A model is
trained once per size on a 20,000-deal sample and the same champion scores both ways; `train`
runs on the whole export (each engine with its own registry, so neither is gated against the
other). `--skip-one` leaves out the single-process runs (an export too large for one process).
Reported: wall time, peak memory of the tree and per worker, and the ratios; then the time one
partition's snapshots and features take in one process (median of three partitions), the
figure a paper estimate for larger exports starts from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tree_peak(cmd: list[str], env: dict, cwd: Path) -> dict:
    start = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a full pipe nobody reads would stall the command
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    top = psutil.Process(proc.pid)
    peak_total, peak_one, peak_top = 0, 0, 0
    while proc.poll() is None:
        try:
            members = [top, *top.children(recursive=True)]
            rss = [m.memory_info().rss for m in members if m.is_running()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            rss = []
        if rss:
            peak_total = max(peak_total, sum(rss))
            peak_one = max(peak_one, max(rss[1:], default=0))
            peak_top = max(peak_top, rss[0])
        time.sleep(0.2)
    log.seek(0)
    output = log.read()
    if proc.returncode != 0:
        kept = Path(tempfile.mkstemp(prefix="oppscore-scale-", suffix=".log")[1])
        kept.write_text(output, encoding="utf-8")
        raise RuntimeError(f"{' '.join(cmd)} failed (its whole output: {kept}):\n{output[-2000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak GiB (tree)": round(peak_total / 2**30, 2), "peak GiB (largest child)": round(peak_one / 2**30, 2), "peak GiB (command itself)": round(peak_top / 2**30, 2)}


def _make(n: int, parts: int, root: Path, with_whole: bool = True) -> tuple[Path | None, Path]:
    """The export in `parts` partitions and (`with_whole`) in one folder: the whole one is
    concatenated in this process, about 2.5 GiB at a million deals."""
    from features.loading import write_export
    from features.partitions import PART
    from features.settings import settings_toml
    from features.synthetic import generate
    from features.tables import TABLE_NAMES, Tables

    split, whole = root / "parts", root / "whole"
    per = n // parts
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_NAMES}
    for k in range(parts):
        g = generate(n=per, seed=1000 + k)
        renamed = []
        for name in TABLE_NAMES:
            frame = getattr(g.tables, name).copy()
            frame["opportunity_id"] = f"P{k:03d}-" + frame["opportunity_id"].astype(str)
            renamed.append(frame)
            if with_whole:
                frames[name].append(frame)
        write_export(Tables(*renamed), split / f"{PART}{k:05d}", fmt="parquet")
    config = settings_toml(g.stages, g.segments)
    (split / "oppscore.toml").write_text(config, encoding="utf-8")
    if not with_whole:
        return None, split
    write_export(Tables(*(pd.concat(frames[name], ignore_index=True) for name in TABLE_NAMES)), whole, fmt="parquet")
    (whole / "oppscore.toml").write_text(config, encoding="utf-8")
    return whole, split


@contextmanager
def partition_folder(given: Path | None, deals: int, parts: int, prefix: str) -> Iterator[Path]:
    """`given`, or an export of `deals` generated in `parts` partitions (as this benchmark
    generates them) in a temporary folder removed afterwards."""
    if given is not None:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield _make(deals, parts, root, with_whole=False)[1]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _partition_seconds(split: Path) -> dict:
    """Median seconds (of three partitions) to read one partition and build its snapshots and
    features in this process, with the statistics of a first pass over every partition."""
    import statistics

    from engines.runner import runner
    from features.settings import load_settings
    from features.times import utc_now
    from training.partitioned import PartitionedExport, snapshot_piece

    settings = load_settings(split / "oppscore.toml")
    now = utc_now()
    with runner("local") as run:
        source = PartitionedExport(run, split, settings, now)
    from engines.work import stages_of

    stages = stages_of(settings)
    spec, stats = source.spec_and_stats(stages, settings)
    times, peaks = [], []
    for part in sorted(split.glob("part-*"))[:3]:
        before = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        snaps, x = snapshot_piece(part, None, settings, now, stages, spec, stats, source.end, False)
        times.append(time.perf_counter() - t0)
        peaks.append((len(snaps), x.nbytes, psutil.Process().memory_info().rss - before))
        del snaps, x
    rows, matrix, _ = peaks[0]
    return {"seconds": round(statistics.median(times), 1), "peak GiB (tree)": "–", "peak GiB (largest child)": f"{rows:,} snapshots, matrix {matrix / 2**20:.0f} MiB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--commands", nargs="+", choices=["features", "score", "train"], default=["features", "score"])
    parser.add_argument("--skip-one", action="store_true", help="only the Dask runs")
    args = parser.parse_args()
    oppscore = str(Path(sys.executable).with_name("oppscore"))
    rows = []
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"oppscore-scale-{n}-"))
        try:
            whole, split = _make(n, args.partitions, root, with_whole=not args.skip_one)
            env = {**os.environ, "OPPSCORE_HOME": str(root / ".oppscore"), "OPPSCORE_CHAMPION_DIR": str(root / "champion"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
            env.pop("MLFLOW_TRACKING_URI", None)
            if "score" in args.commands:
                sample = root / "sample"
                subprocess.run([oppscore, "generate", "--out", str(sample), "--n", "20000", "--seed", "7"], env=env, check=True, capture_output=True)
                subprocess.run([oppscore, "train", "--data", str(sample)], env=env, check=True, capture_output=True, cwd=root)
            at = "2026-09-01"
            dask = ["--engine", "dask", "--workers", "2", "--memory-limit", args.memory_limit]
            runs = {
                ("features", "one process"): [oppscore, "features", "--data", str(whole), "--as-of", at, "--out", str(root / "f.parquet")],
                ("features", "dask, 2 workers"): [oppscore, "features", "--data", str(split), "--as-of", at, "--out", str(root / "f-parts"), *dask],
                ("score", "one process"): [oppscore, "score", "--data", str(whole), "--as-of", at, "--out", str(root / "s.parquet")],
                ("score", "dask, 2 workers"): [oppscore, "score", "--data", str(split), "--as-of", at, "--out", str(root / "s-parts"), *dask],
                ("train", "one process"): [oppscore, "train", "--data", str(whole)],
                ("train", "dask, 2 workers"): [oppscore, "train", "--data", str(split), *dask],
            }
            for (command, engine), cmd in runs.items():
                if command not in args.commands or (args.skip_one and engine == "one process"):
                    continue
                own = {"OPPSCORE_HOME": str(root / f".oppscore-{engine[:4]}"), "OPPSCORE_CHAMPION_DIR": str(root / f"champion-{engine[:4]}")} if command == "train" else {}
                measured = _tree_peak(cmd, {**env, **own}, root)
                rows.append({"deals": n, "command": command, "engine": engine, **measured})
                print(json.dumps(rows[-1]), flush=True)
            if "train" in args.commands:
                per_part = _partition_seconds(split)
                rows.append({"deals": n, "command": "one partition's snapshots + features", "engine": f"{n // args.partitions:,} deals, one process", **per_part})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.partitions} partitions; LocalCluster workers limited to {args.memory_limit} each\n")
    print("| deals | command | engine | seconds | peak GiB (tree) | peak GiB (the command's process) | peak GiB (largest child) | time ratio dask/one | memory ratio dask/one |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        one = next((o for o in rows if o["deals"] == r["deals"] and o["command"] == r["command"] and o["engine"] == "one process"), None)
        ratio = ("–", "–") if one is None else (f"{r['seconds'] / one['seconds']:.2f}", f"{r['peak GiB (tree)'] / one['peak GiB (tree)']:.2f}") if r is not one else ("1", "1")
        print(f"| {r['deals']:,} | {r['command']} | {r['engine']} | {r['seconds']} | {r['peak GiB (tree)']} | {r.get('peak GiB (command itself)', '–')} | {r['peak GiB (largest child)']} | {ratio[0]} | {ratio[1]} |")


if __name__ == "__main__":
    main()
