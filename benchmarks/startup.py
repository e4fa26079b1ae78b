"""How long a command takes to start (issue 42: `oppscore --help` was 1.9 s with a core busy).

Times `oppscore --help` and `oppscore validate --help` as a user runs them (a new process each
time), beside the floor of a bare `python -c pass` measured in the same run; medians of
`--runs` runs. Target: `oppscore --help` under 1 s on a quiet machine."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _median(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    floor = _median([sys.executable, "-c", "pass"], runs)
    rows = [("python -c pass (floor)", floor)]
    for name, args in (("oppscore --help", [str(BIN / "oppscore"), "--help"]), ("oppscore validate --help", [str(BIN / "oppscore"), "validate", "--help"]),
                       ("import oppscore.cli", [sys.executable, "-c", "import oppscore.cli"])):
        rows.append((name, _median(args, runs)))
    print("| command | median s | ÷ floor |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| `{name}` | {seconds:.2f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()
