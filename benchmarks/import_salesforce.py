"""Time and memory of `oppscore import salesforce` on a generated Salesforce Data Export.

    python benchmarks/import_salesforce.py [--n 100000]

A generated pipeline (`features.synthetic`) written as Salesforce writes it: Opportunity.csv,
OpportunityHistory.csv (a row per stage change, plus close-date and amount edits of the same
stage), Task.csv (completed tasks on the opportunities), OpportunityStage.csv, with Salesforce's
quoting and timestamp forms, and what real orgs add: a rich-text custom field with NUL bytes and
line breaks in one deal of 50, two custom fields whose names differ only by an underscore. Target (issue 12, 2 cores): 100k opportunities (≈ 1M history rows,
≈ 1M tasks) in ≤ 60 s and ≤ 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_export(n: int, folder: Path) -> dict[str, int]:
    import csv

    import numpy as np

    from features.synthetic import generate

    g = generate(n=n, seed=3)
    t = g.tables
    sfid = lambda prefix, i: prefix + np.char.zfill(np.asarray(i).astype(str), 12).astype(object)  # noqa: E731
    code = {oid: i for i, oid in enumerate(t.opportunities["opportunity_id"])}
    opp_ids = sfid("006", np.arange(len(code)))
    stamp = lambda s: s.dt.strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    last = t.stage_history.groupby("opportunity_id")["stage"].last()
    opps = t.opportunities.assign(
        Id=opp_ids, IsDeleted="0", StageName=t.opportunities["opportunity_id"].map(last), Amount=t.opportunities["amount"].map("{:.2f}".format),
        CloseDate=t.opportunities["expected_close_date"].dt.strftime("%Y-%m-%d"), CreatedDate=stamp(t.opportunities["created_at"]),
        OwnerId=sfid("005", t.opportunities["owner_id"].str.removeprefix("rep-").astype(int)), LeadSource=t.opportunities["source"], Type=t.opportunities["industry"],
    )
    # what real orgs add (issue 28): a rich-text field whose HTML spans lines and holds NUL bytes
    # in one deal of 50, and two custom fields whose names differ only by an underscore
    every = np.arange(len(opps)) % 50 == 0
    opps["Notes_Html__c"] = np.where(every, "<p>Call\x00 notes</p>\n<p>next steps</p>", "")
    opps["Budget_Confirmed__c"] = np.where(np.arange(len(opps)) % 3 == 0, "Yes", "No")
    opps["BudgetConfirmed__c"] = np.where(np.arange(len(opps)) % 4 == 0, "Yes", "No")
    opps = opps[["Id", "IsDeleted", "StageName", "Amount", "CloseDate", "CreatedDate", "OwnerId", "LeadSource", "Type", "Notes_Html__c", "Budget_Confirmed__c", "BudgetConfirmed__c"]]
    hist = t.stage_history.assign(OpportunityId=t.stage_history["opportunity_id"].map(code).map(lambda i: opp_ids[i]))
    hist = hist.assign(Id=sfid("008", np.arange(len(hist))), CreatedDate=stamp(hist["entered_at"]), StageName=hist["stage"], Amount="1000.00", CloseDate="2026-12-31", IsDeleted="0")
    edits = hist.sample(frac=1.0, random_state=0).assign(Amount="1200.00", CloseDate="2027-01-31")  # same-stage rows: amount and close-date edits
    hist = __import__("pandas").concat([hist, edits], ignore_index=True)[["Id", "OpportunityId", "CreatedDate", "StageName", "Amount", "CloseDate", "IsDeleted"]]
    acts = t.activities
    tasks = acts.assign(Id=sfid("00T", np.arange(len(acts))), WhatId=acts["opportunity_id"].map(code).map(lambda i: opp_ids[i]), Status="Completed", IsClosed="1",
                        CompletedDateTime=acts["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.000Z"), TaskSubtype=acts["type"], IsDeleted="0")[
        ["Id", "WhatId", "Status", "IsClosed", "CompletedDateTime", "TaskSubtype", "IsDeleted"]]
    stages = [[name, i + 1, "0", "0", w * 100] for i, (name, w) in enumerate(zip(g.stages.open, g.stages.configured_weights, strict=True))]
    stages += [[g.stages.won, 90, "1", "1", 100], [g.stages.lost, 91, "1", "0", 0]]
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("Opportunity", opps), ("OpportunityHistory", hist), ("Task", tasks)):
        frame.to_csv(folder / f"{name}.csv", index=False, quoting=csv.QUOTE_ALL)
    __import__("pandas").DataFrame(stages, columns=["MasterLabel", "SortOrder", "IsClosed", "IsWon", "DefaultProbability"]).to_csv(folder / "OpportunityStage.csv", index=False, quoting=csv.QUOTE_ALL)
    return {"opportunities": len(opps), "history rows": len(hist), "tasks": len(tasks)}


def _import(folder: str) -> None:
    """In its own process, so that its peak memory is the import's alone."""
    from benchmarks.common import peak_rss_gib
    from crm.salesforce_import import import_salesforce

    start = time.perf_counter()
    imported = import_salesforce(Path(folder))
    took = time.perf_counter() - start
    t = imported.tables
    print(json.dumps({"import s": round(took, 1), "peak GiB": round(peak_rss_gib(), 2), "stage rows": len(t.stage_history),
                      "activities": len(t.activities), "field history rows": len(t.field_history)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--import-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.import_only:
        _import(args.import_only)
        return
    with tempfile.TemporaryDirectory() as tmp:
        sizes = write_export(args.n, Path(tmp) / "sf")
        run = subprocess.run([sys.executable, __file__, "--import-only", str(Path(tmp) / "sf")], capture_output=True, text=True, check=True)
    row = {**sizes, **json.loads(run.stdout.strip().splitlines()[-1])}
    print("| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
