"""Where a partitioned `train` holds its memory: the client's resident memory at every progress
step and, each time it rises by `--rise` MiB, the Python stack that was running then (this
repository's frames), beside the workers' resident memory. What the 1M-deal runs of issue 16 were
taken apart with; the next step toward 3M deals starts from its output.

    python benchmarks/train_memory.py [--deals 100000] [--partitions 16] [--engine dask] [--workers 2] [--memory-limit 2GiB] [--rise 30] [--data PARTITION_FOLDER]

The client's memory is sampled every 20 ms by a thread of this process (which is the client);
the workers' by `psutil` at each step, and the whole process tree's every 0.2 s. Without `--data`, the export is generated as
`benchmarks/scale.py` generates it, in a temporary folder removed afterwards.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30


class Sampler:
    """The client's resident memory every 20 ms, its peak, and the stack at each rise."""

    def __init__(self, rise_mib: int) -> None:
        self.proc = psutil.Process()
        self.rise = rise_mib * 2**20
        self.start = time.perf_counter()
        self.peak = self.level = self.tree_peak = 0
        self.main = threading.main_thread().ident
        self.rises: list[tuple[float, float, list[str]]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        ticks = 0
        while True:
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            ticks += 1
            if ticks % 10 == 0:  # the whole tree (client, scheduler, workers) every 0.2 s, as benchmarks/scale.py does
                self.tree_peak = max(self.tree_peak, rss + sum(_rss(c) for c in self.proc.children(recursive=True)))
            if rss > self.level + self.rise:
                self.level = rss
                frame = sys._current_frames().get(self.main)
                stack = [f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame) if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename] if frame else []
                # the frame let go at once: held until the next rise, it kept the locals of the
                # function running then, and of every caller, alive after they returned (at 3M
                # deals, the unsorted stage history and its sort order: part of what this
                # benchmark measured was its own)
                del frame
                self.rises.append((self.elapsed(), rss / GIB, stack[-6:]))
                print(f"  rise {self.elapsed():7.1f} s  {rss / GIB:.2f} GiB  " + " <- ".join(reversed(stack[-6:])), flush=True)
            time.sleep(0.02)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def workers(self) -> list[float]:
        return sorted((c.memory_info().rss / GIB for c in self.proc.children(recursive=True) if _is_worker(c)), reverse=True)


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--engine", choices=["local", "dask"], default="dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--rise", type=int, default=30, help="MiB of growth of the client's memory that prints the stack")
    parser.add_argument("--data", type=Path, help="a partition folder (`oppscore partition`) instead of a generated export")
    args = parser.parse_args()
    from benchmarks.scale import partition_folder

    with partition_folder(args.data, args.deals, args.partitions, "oppscore-train-memory-") as folder:
        _measure(args, folder)


def _measure(args: argparse.Namespace, folder: Path) -> None:
    from engines.runner import runner
    from engines.work import stages_of
    from features.settings import load_settings
    from features.times import utc_now
    from training.partitioned import PartitionedExport
    from training.pipeline import train

    sampler = Sampler(args.rise)
    steps: list[tuple[float, str, float, float, list[float]]] = []

    def step(message: str) -> None:
        rss = sampler.proc.memory_info().rss / GIB
        sampler.peak = max(sampler.peak, int(rss * GIB))
        steps.append((sampler.elapsed(), message, rss, sampler.peak / GIB, sampler.workers()))
        print(f"{sampler.elapsed():7.1f} s  client {rss:.2f} GiB (peak {sampler.peak / GIB:.2f})  workers {', '.join(f'{w:.2f}' for w in steps[-1][4]) or '–'}  | {message}", flush=True)

    settings = load_settings(folder / "oppscore.toml")
    with runner(args.engine, None, args.workers, args.memory_limit, progress=step) as run:
        step("first pass")
        source = PartitionedExport(run, folder, settings, utc_now())
        result = train(source, stages_of(settings), settings, progress=step)
        step("done")
    print(f"\n{result.counts['opportunities']:,} deals, {result.counts['snapshots']:,} snapshots; {args.engine} engine" + (f", {args.workers} workers of {args.memory_limit}" if args.engine == "dask" else ""))
    print(f"client peak {sampler.peak / GIB:.2f} GiB; the process tree's peak {sampler.tree_peak / GIB:.2f} GiB; {sampler.elapsed():.0f} s\n")
    print("| seconds | step | client GiB | client peak so far | workers GiB |\n|---|---|---|---|---|")
    for at, message, rss, peak, workers in steps:
        counted = re.search(r"(\d+) of (\d+) partitions", message)
        if counted and counted[1] != counted[2]:  # a partition's progress: only the last of a pass
            continue
        print(f"| {at:.1f} | {message} | {rss:.2f} | {peak:.2f} | {', '.join(f'{w:.2f}' for w in workers) or '–'} |")


if __name__ == "__main__":
    main()
