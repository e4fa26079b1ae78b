"""`oppscore import salesforce NEWER --into DIR`: a newer export (or only its changed rows)
merged into a folder imported before gives the very tables a full import of the merged export
gives: new and changed records, deleted ones honoured, history appended without duplicates."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from benchmarks.import_salesforce import write_export as write_salesforce_export
from features.tables import TABLE_NAMES
from oppscore.cli import app

runner = CliRunner()
KEYS = {"Opportunity": "Id", "OpportunityHistory": "Id", "Task": "Id", "OpportunityStage": "MasterLabel"}


def _read(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False) for name in KEYS}


def _write(objects: dict[str, pd.DataFrame], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in objects.items():
        frame.to_csv(folder / f"{name}.csv", index=False, quoting=csv.QUOTE_ALL)
    return folder


def _older_and_newer(full: dict[str, pd.DataFrame]):
    """The export as it was 60 days before the end (stale records, no later rows) and the rows
    Salesforce would hand over since: new and changed records, later history and tasks, two
    deleted deals, one record resent unchanged. And the export they make together."""
    opps, hist, tasks = full["Opportunity"], full["OpportunityHistory"], full["Task"]
    when = pd.to_datetime(hist["CreatedDate"])
    cut = when.max() - pd.Timedelta(days=60)
    late_hist = when > cut
    late_task = pd.to_datetime(tasks["CompletedDateTime"]).dt.tz_localize(None) > cut
    created_late = pd.to_datetime(opps["CreatedDate"]) > cut
    moved = opps["Id"].isin(hist.loc[late_hist, "OpportunityId"]) & ~created_late
    older_opps = opps[~created_late].copy()
    older_opps.loc[moved[~created_late], "Amount"] = "1.00"  # what these records said before they changed
    deleted = older_opps.loc[~moved[~created_late], "Id"].iloc[[3, 7]].tolist()
    older = {"Opportunity": older_opps, "OpportunityHistory": hist[~late_hist], "Task": tasks[~late_task], "OpportunityStage": full["OpportunityStage"]}
    resent = older_opps[~older_opps["Id"].isin(deleted) & ~moved[~created_late]].head(1)
    gone = opps[opps["Id"].isin(deleted)].assign(IsDeleted="1")
    newer = {"Opportunity": pd.concat([opps[created_late | moved], gone, resent], ignore_index=True), "OpportunityHistory": hist[late_hist], "Task": tasks[late_task]}
    together = {}
    for name, frame in older.items():
        if name in newer:
            key = KEYS[name]
            frame = pd.concat([frame[~frame[key].isin(newer[name][key])], newer[name].drop_duplicates(key, keep="last")], ignore_index=True)
        together[name] = frame
    return older, newer, together, {"added": int(created_late.sum()), "changed": int(moved.sum()), "deleted": 2, "unchanged": 1}


def test_into_gives_the_tables_of_a_full_import(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    write_salesforce_export(400, tmp_path / "full")
    older, newer, together, expected = _older_and_newer(_read(tmp_path / "full"))
    assert runner.invoke(app, ["import", "salesforce", str(_write(older, tmp_path / "older")), "--out", str(tmp_path / "merged")]).exit_code == 0
    (tmp_path / "merged" / "oppscore.toml").write_text((tmp_path / "merged" / "oppscore.toml").read_text() + "\n[serving]\nmax_batch = 500\n")  # an edit of the user's
    result = runner.invoke(app, ["import", "salesforce", str(_write(newer, tmp_path / "newer")), "--into", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    row = f"Opportunity │ {expected['added']} │ {expected['changed']} │ {expected['deleted']} │ {expected['unchanged']} │"
    assert row in said, said
    assert runner.invoke(app, ["import", "salesforce", str(_write(together, tmp_path / "together")), "--out", str(tmp_path / "whole")]).exit_code == 0
    for name in TABLE_NAMES:
        merged, whole = tmp_path / "merged" / f"{name}.csv", tmp_path / "whole" / f"{name}.csv"
        assert merged.exists() == whole.exists(), name
        if whole.exists():
            a, b = pd.read_csv(merged, dtype=str), pd.read_csv(whole, dtype=str)
            pd.testing.assert_frame_equal(a, b)
            assert merged.read_bytes() == whole.read_bytes(), name
    opps = pd.read_csv(tmp_path / "merged" / "opportunities.csv", dtype=str)
    assert not opps["opportunity_id"].isin(newer["Opportunity"].loc[newer["Opportunity"]["IsDeleted"] == "1", "Id"]).any()
    assert "max_batch = 500" in (tmp_path / "merged" / "oppscore.toml").read_text()  # the folder's config is kept
    history = pd.read_csv(tmp_path / "merged" / "stage_history.csv", dtype=str)
    assert not history.duplicated().any()
    again = runner.invoke(app, ["import", "salesforce", str(tmp_path / "newer"), "--into", str(tmp_path / "merged")])  # the same changes twice: nothing moves
    assert again.exit_code == 0
    for name in TABLE_NAMES:
        if (tmp_path / "whole" / f"{name}.csv").exists():
            assert (tmp_path / "merged" / f"{name}.csv").read_bytes() == (tmp_path / "whole" / f"{name}.csv").read_bytes(), name
    assert np.isfinite(len(opps))


def test_into_needs_an_earlier_salesforce_import(tmp_path: Path, export_dir: Path) -> None:
    write_salesforce_export(40, tmp_path / "sf")
    result = runner.invoke(app, ["import", "salesforce", str(tmp_path / "sf"), "--into", str(export_dir)])
    assert result.exit_code == 1 and "no Salesforce import kept there" in " ".join(result.output.split())
    result = runner.invoke(app, ["import", "hubspot", str(tmp_path / "sf"), "--into", str(export_dir)])
    assert result.exit_code == 1 and "merging is for Salesforce exports" in " ".join(result.output.split())
    result = runner.invoke(app, ["import", "salesforce", str(tmp_path / "sf"), "--into", str(export_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2


def test_merge_by_record_id_counts_what_changed() -> None:
    """Unit rules of the merge: the newer row replaces the older one by id (of an id written
    twice in the older export, its last row), deletions are counted once, rows resent alike
    are unchanged, objects without ids keep every distinct row once."""
    from crm.salesforce_import import merge

    def frame(rows):
        return pd.DataFrame(rows, columns=["id", "isdeleted", "stagename", "_file", "_line"], dtype=object)

    older = {"Opportunity": frame([["A", "0", "One", "o", 2], ["B", "0", "One", "o", 3], ["B", "0", "Two", "o", 4], ["C", "1", "One", "o", 5]]),
             "Event": pd.DataFrame({"whatid": ["A", "B"], "_file": "e", "_line": [2, 3]}, dtype=object)}
    newer = {"Opportunity": frame([["B", "0", "Two", "n", 2], ["A", "1", "One", "n", 3], ["C", "1", "One", "n", 4], ["D", "0", "One", "n", 5]]),
             "Event": pd.DataFrame({"whatid": ["B", "C"], "_file": "f", "_line": [2, 3]}, dtype=object)}
    merged, changes = merge(older, newer)
    assert changes["Opportunity"] == {"added": 1, "changed": 0, "deleted": 1, "unchanged": 2}
    assert merged["Opportunity"]["id"].tolist() == ["B", "A", "C", "D"] and merged["Opportunity"]["_line"].tolist() == [2, 3, 4, 5]
    assert merged["Event"]["whatid"].tolist() == ["A", "B", "C"]
