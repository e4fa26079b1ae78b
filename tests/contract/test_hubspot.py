"""The HubSpot importer on a deals export with two pipelines: one pipeline at a time, stages in
the export's order, won and lost from Is Closed Won / Is closed, the other pipeline reported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from crm.hubspot_import import import_hubspot
from oppscore.cli import app

runner = CliRunner()
HEADER = ["Record ID", "Deal Name", "Pipeline", "Deal Stage", "Create Date", "Close Date", "Amount", "Deal owner", "Deal Type", "Is Closed Won", "Is closed",
          'Date entered "Appointment scheduled (Sales)"', 'Date entered "Contract sent (Sales)"', 'Date entered "Closed won (Sales)"', 'Date entered "Closed lost (Sales)"',
          'Date entered "Onboarding (Renewals)"', 'Date entered "Renewed (Renewals)"']
ROWS = [
    ["101", "A", "Sales", "Closed won", "2024-01-02 10:00", "2024-02-01", "5000", "Ana", "newbusiness", "true", "true", "2024-01-02 10:00", "2024-01-10 09:00", "2024-02-01 12:00", "", "", ""],
    ["102", "B", "Sales", "Closed lost", "2024-01-05 10:00", "2024-03-01", "", "Ben", "existingbusiness", "false", "true", "", "2024-01-05 10:00", "", "2024-03-01 08:00", "", ""],
    ["103", "C", "Sales", "Contract sent", "2024-02-01 10:00", "2024-04-01", "800", "Ana", "newbusiness", "false", "false", "2024-02-01 10:00", "2024-02-20 10:00", "", "", "", ""],
    ["201", "R", "Renewals", "Onboarding", "2024-01-03 10:00", "2024-05-01", "100", "Ana", "existingbusiness", "false", "false", "", "", "", "", "2024-01-03 10:00", ""],
]


def _export(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(ROWS, columns=HEADER).to_csv(folder / "hubspot-crm-exports-all-deals.csv", index=False)
    return folder


def test_one_pipeline_in_order_with_its_history(tmp_path: Path) -> None:
    got = import_hubspot(_export(tmp_path / "hs"))
    assert got.report["pipeline imported"] == "Sales" and got.report["pipelines"] == {"Sales": 3, "Renewals": 1}
    assert got.stages.open == ["Appointment scheduled", "Contract sent"]
    assert (got.stages.won, got.stages.lost) == ("Closed won", "Closed lost")
    hist = got.tables.stage_history
    assert hist.assign(entered_at=hist["entered_at"].astype(str)).values.tolist() == [
        ["101", "Appointment scheduled", "2024-01-02 10:00:00+00:00"],
        ["101", "Contract sent", "2024-01-10 09:00:00+00:00"],
        ["101", "Closed won", "2024-02-01 12:00:00+00:00"],
        ["102", "Contract sent", "2024-01-05 10:00:00+00:00"],
        ["102", "Closed lost", "2024-03-01 08:00:00+00:00"],
        ["103", "Appointment scheduled", "2024-02-01 10:00:00+00:00"],
        ["103", "Contract sent", "2024-02-20 10:00:00+00:00"],
    ]
    opps = got.tables.opportunities.set_index("opportunity_id")
    assert opps.loc["102", "amount"] == 0.0 and opps.loc["102", "amount_missing"] == "yes"
    assert (got.report["won"], got.report["lost"], got.report["open"]) == (1, 1, 1)
    assert got.report["deals created at a later stage"] == 1


def test_the_other_pipeline_by_name_and_the_cli(tmp_path: Path) -> None:
    folder = _export(tmp_path / "hs")
    out = tmp_path / "sales"
    result = runner.invoke(app, ["import", "hubspot", str(folder), "--out", str(out), "--pipeline", "Sales"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["validate", "--data", str(out)]).exit_code == 0
    bad = runner.invoke(app, ["import", "hubspot", str(folder), "--out", str(out), "--pipeline", "Nope"])
    assert bad.exit_code == 1 and "--pipeline: found 'Nope'" in " ".join(bad.output.split())


def test_engagements_become_activities_of_their_deals(tmp_path: Path) -> None:
    folder = _export(tmp_path / "hs")
    pd.DataFrame(
        [
            ["1", "CALL", "2024-01-03 10:00", "101;201", "INBOUND", "", "c1"],
            ["2", "EMAIL", "2024-01-04 10:00", "102", "EMAIL", "", "c2"],
            ["3", "TASK", "2024-01-05 10:00", "101", "", "NOT_STARTED", ""],
            ["4", "MEETING", "2024-01-06 10:00", "999", "", "", ""],
        ],
        columns=["Activity ID", "Activity type", "Activity date", "Associated Deal IDs", "Call direction", "Task status", "Associated Contact IDs"],
    ).to_csv(tmp_path / "activities.csv", index=False)
    got = import_hubspot(folder, engagements=tmp_path / "activities.csv")
    acts = got.tables.activities
    assert acts[["opportunity_id", "type", "direction"]].values.tolist() == [["101", "call", "inbound"], ["102", "email", "outbound"]]
    assert got.report["engagements"] == {"rows read": 4, "on a deal of this pipeline": 2, "open tasks left out": 1}
