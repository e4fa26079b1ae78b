"""Time of `oppscore import salesforce WEEK --into DIR`: a week's changes merged into a
Salesforce import of 100k opportunities.

    python benchmarks/import_into.py [--n 100000] [--repeat 3]

The export is `benchmarks/import_salesforce.py`'s (a generated pipeline written as Salesforce
writes it). The folder is imported from the export as it stood a week before its end; the
week's changes are what a delta export holds: the opportunities created or moved in the week
(whole records), their history rows and the tasks of the week. Each repeat merges the same
week into the same folder (a merge is idempotent, so every repeat does the same work); the
reference is a full import of the whole export in the same process (the alternative to
`--into`). Target (issue 32): ≤ 20 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def split_week(full: Path, older: Path, week: Path) -> dict[str, int]:
    import pandas as pd

    read = {name: pd.read_csv(full / f"{name}.csv", dtype=str, keep_default_na=False) for name in ("Opportunity", "OpportunityHistory", "Task", "OpportunityStage")}
    opps, hist, tasks = read["Opportunity"], read["OpportunityHistory"], read["Task"]
    when = pd.to_datetime(hist["CreatedDate"])
    cut = when.max() - pd.Timedelta(days=7)
    late_hist = when > cut
    late_task = pd.to_datetime(tasks["CompletedDateTime"]).dt.tz_localize(None) > cut
    touched = (pd.to_datetime(opps["CreatedDate"]) > cut) | opps["Id"].isin(hist.loc[late_hist, "OpportunityId"])
    old_opps = opps[pd.to_datetime(opps["CreatedDate"]) <= cut]
    parts = {
        older: {"Opportunity": old_opps, "OpportunityHistory": hist[~late_hist], "Task": tasks[~late_task], "OpportunityStage": read["OpportunityStage"]},
        week: {"Opportunity": opps[touched], "OpportunityHistory": hist[late_hist], "Task": tasks[late_task]},
    }
    for folder, objects in parts.items():
        folder.mkdir(parents=True)
        for name, frame in objects.items():
            frame.to_csv(folder / f"{name}.csv", index=False, quoting=csv.QUOTE_ALL)
    return {"opportunities": len(opps), "week: opportunities": int(touched.sum()), "week: history rows": int(late_hist.sum()), "week: tasks": int(late_task.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from typer.testing import CliRunner

    from benchmarks.import_salesforce import write_export
    from oppscore.cli import app

    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_export(args.n, tmp / "full")
        sizes = split_week(tmp / "full", tmp / "older", tmp / "week")
        done = runner.invoke(app, ["import", "salesforce", str(tmp / "older"), "--out", str(tmp / "imported")])
        assert done.exit_code == 0, done.output
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            done = runner.invoke(app, ["import", "salesforce", str(tmp / "week"), "--into", str(tmp / "imported")])
            times.append(time.perf_counter() - start)
            assert done.exit_code == 0, done.output
        start = time.perf_counter()
        done = runner.invoke(app, ["import", "salesforce", str(tmp / "full"), "--out", str(tmp / "again")])
        full = time.perf_counter() - start
        assert done.exit_code == 0, done.output
    row = {**sizes, "--into s (median)": round(statistics.median(times), 1), "runs": " / ".join(f"{t:.1f}" for t in times), "full import s": round(full, 1),
           "ratio": round(statistics.median(times) / full, 2)}
    print(json.dumps(row))
    print("| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
