"""The Salesforce importer on a Data Export built here from Salesforce's documented object fields,
carrying each quirk real exports have, with the exact canonical rows expected; the stock
Developer Edition sample; and bad input, named by file, line and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crm.salesforce_import import import_salesforce
from features.contract import load_export
from features.errors import ExportInvalid
from features.settings import load_settings
from features.times import utc_now
from oppscore.cli import app
from tests.conftest import SHARED

runner = CliRunner()
DEVORG = SHARED / "datasets" / "salesforce-devorg-sample"
# 18-character ids: the first 15 characters are the id, the rest a checksum
O1, O2, O3, O4 = "006A00000000001AAA", "006A00000000002AAA", "006A00000000003AAA", "006A00000000004AAA"
ACC = "001A00000000001AAA"
USER, ROLE = "005A00000000001AAA", "00EA00000000001AAA"


def _write(folder: Path, name: str, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> None:
    lines = [",".join(f'"{h}"' for h in header)] + [",".join(f'"{v}"' for v in row) for row in rows]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


def _export(folder: Path, extra: list[tuple[str, str]] = ()) -> Path:
    """Four deals: O1 won in EUR via a same-stage amount edit; O2 created at a late stage and
    lost; O3 deleted; O4 open with no amount. Stage names in Latin-1 and UTF-8 in one file.
    `extra`: more Opportunity columns (name, every row's value)."""
    stage_header = ["Id", "MasterLabel", "IsActive", "SortOrder", "IsClosed", "IsWon", "DefaultProbability"]
    stage_rows = [
        ["01J1", "Prospecting", "1", "1", "0", "0", "10"],
        ["01J2", "Diseño Propuesta", "1", "2", "0", "0", "40"],
        ["01J3", "Negociación", "1", "3", "0", "0", "70"],
        ["01J4", "Closed Won", "1", "4", "1", "1", "100"],
        ["01J5", "Closed Lost", "1", "5", "1", "0", "0"],
    ]
    # mostly Latin-1 (Windows-1252), with the last stage name's cell pasted in as UTF-8
    text = "\r\n".join([",".join(f'"{h}"' for h in stage_header)] + [",".join(f'"{v}"' for v in r) for r in stage_rows[:2]]) + "\r\n"
    latin = text.encode("cp1252") + (b'"01J3","' + "Negociación".encode() + b'","1","3","0","0","70"\r\n')
    latin += "\r\n".join(",".join(f'"{v}"' for v in r) for r in stage_rows[3:]).encode("cp1252") + b"\r\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "OpportunityStage.csv").write_bytes(latin)
    # what real orgs' exports hold beside the standard fields: a rich-text field with NUL bytes and
    # lines in its HTML, custom fields whose names differ only by underscores, a name twice
    # (a custom field labelled like a standard one), and a snake_case copy of a standard field
    names, values = [n for n, _ in extra], [v for _, v in extra]
    _write(folder, "opportunity.CSV", ["Id", "IsDeleted", "AccountId", "Name", "StageName", "Amount", "Probability", "CloseDate", "Type", "LeadSource",
                                       "IsClosed", "IsWon", "OwnerId", "CreatedDate", "CurrencyIsoCode", "Region__c", "Notes_Html__c",
                                       "Budget_Confirmed__c", "BudgetConfirmed__c", "Name", "Stage_Name", *names], [
        [O1, "0", ACC, "Uno", "Closed Won", "1000.50", "100", "2024-03-01", "New Customer", "Web", "1", "1", USER, "2024-01-10 09:00:00", "EUR", "Norte",
         "<p>Firmado\x00</p>\n<p>ok</p>", "Sí", "Yes", "Uno", "Ganado", *values],
        [O2, "0", ACC, "Dos", "Closed Lost", "2000", "0", "2024-04-01", "New Customer", "Partner", "1", "0", USER, "2024-02-01T10:00:00.000Z", "USD", "Sur",
         "<p>\x00\x00</p>", "No", "No", "Dos", "Perdido", *values],
        [O3, "1", ACC, "Tres", "Prospecting", "5", "10", "2024-04-01", "", "", "0", "0", USER, "2024-02-02 10:00:00", "USD", "Norte", "", "", "", "Tres", "", *values],
        [O4, "0", "000000000000000AAA", "Cuatro", "Diseño Propuesta", "", "40", "2024-05-01", "", "Web", "0", "0", USER, "2024-02-05 08:00:00+0000", "USD", "Sur",
         "", "No", "Yes", "Cuatro", "Propuesta", *values],
    ])
    _write(folder, "OpportunityHistory.csv", ["Id", "OpportunityId", "CreatedDate", "StageName", "Amount", "CloseDate", "Probability", "ForecastCategory", "IsDeleted"], [
        ["008A1", O1, "2024-01-10 09:00:00", "Prospecting", "900", "2024-02-15", "10", "Pipeline", "0"],
        ["008A2", O1, "2024-01-20 09:00:00", "Diseño Propuesta", "900", "2024-02-15", "40", "Pipeline", "0"],
        ["008A3", O1, "2024-01-25 09:00:00", "Diseño Propuesta", "1000.50", "2024-03-01", "40", "Pipeline", "0"],  # an edit, not a stage entry
        ["008A4", O1, "2024-03-01 12:00:00", "Closed Won", "1000.50", "2024-03-01", "100", "Closed", "0"],
        ["008A5", O2[:15], "2024-02-01 10:00:00", "Negociación", "2000", "2024-04-01", "70", "Pipeline", "0"],  # created at a late stage
        ["008A6", O2, "2024-03-20 10:00:00", "Closed Lost", "2000", "2024-04-01", "0", "Omitted", "0"],
        ["008A7", O3, "2024-02-02 10:00:00", "Prospecting", "5", "2024-04-01", "10", "Pipeline", "0"],
        ["008A8", O4, "2024-02-05 08:00:00", "Diseño Propuesta", "", "2024-05-01", "40", "Pipeline", "0"],
    ])
    _write(folder, "CurrencyType.csv", ["Id", "IsoCode", "ConversionRate", "IsCorporate", "IsActive"], [["1", "USD", "1.0", "1", "1"], ["2", "EUR", "0.5", "0", "1"]])
    _write(folder, "Account.csv", ["Id", "IsDeleted", "Name", "Type", "Industry", "BillingCountry"], [[ACC, "0", "Acme", "Customer - Direct", "Energía", "España"]])
    _write(folder, "User.csv", ["Id", "Name", "UserRoleId"], [[USER, "Ana", ROLE]])
    _write(folder, "UserRole.csv", ["Id", "Name"], [[ROLE, "Ventas Iberia"]])
    _write(folder, "Task.csv", ["Id", "WhatId", "WhoId", "Subject", "Status", "IsClosed", "ActivityDate", "CompletedDateTime", "TaskSubtype", "CallType", "OwnerId", "IsDeleted"], [
        ["00T1", O1, "003A1", "Call", "Completed", "1", "2024-01-15", "2024-01-15T14:00:00.000Z", "Call", "Inbound", USER, "0"],
        ["00T2", O1, "003A1", "Follow up", "Not Started", "0", "2024-06-01", "", "Task", "", USER, "0"],  # open: a due date, not an activity
        ["00T3", ACC, "003A1", "Account call", "Completed", "1", "2024-01-16", "2024-01-16T10:00:00.000Z", "Call", "Outbound", USER, "0"],  # on the account only
    ])
    _write(folder, "Event.csv", ["Id", "WhatId", "WhoId", "StartDateTime", "EventSubtype", "OwnerId", "IsDeleted"], [["00U1", O2, "003A2", "2024-02-10T15:00:00.000Z", "Event", USER, "0"]])
    return folder


def test_each_quirk_gives_the_exact_canonical_rows(tmp_path: Path) -> None:
    got = import_salesforce(_export(tmp_path / "sf"))
    t = got.tables
    assert got.stages.open == ["Prospecting", "Diseño Propuesta", "Negociación"]  # Latin-1 and UTF-8 cells both right
    assert (got.stages.won, got.stages.lost) == ("Closed Won", "Closed Lost")
    assert got.stages.configured_weights == [0.1, 0.4, 0.7]
    opps = t.opportunities.set_index("opportunity_id")
    assert list(opps.index) == [O1, O2, O4]  # O3 deleted
    assert opps.loc[O1, "amount"] == pytest.approx(2001.0)  # 1000.50 EUR at 0.5 EUR per USD
    assert (opps.loc[O1, "amount_original"], opps.loc[O1, "currency"]) == (1000.5, "EUR")
    assert opps.loc[O4, "amount"] == 0.0 and opps.loc[O4, "amount_missing"] == "yes"
    assert opps.loc[O4, "account_id"] is None  # the null id
    assert opps.loc[O1, "team"] == "Ventas Iberia" and opps.loc[O1, "industry"] == "Energía" and opps.loc[O1, "country"] == "España"
    assert opps.loc[O2, "created_at"] == pd.Timestamp("2024-02-01T10:00:00Z")
    assert opps.loc[O4, "created_at"] == pd.Timestamp("2024-02-05T08:00:00Z")  # +0000
    assert opps.loc[O1, "region"] == "Norte"  # a custom field with two values
    assert (opps.loc[O1, "budget_confirmed"], opps.loc[O1, "budgetconfirmed"]) == ("Sí", "Yes")  # names apart by an underscore: two columns
    assert (opps.loc[O4, "budget_confirmed"], opps.loc[O4, "budgetconfirmed"]) == ("No", "Yes")
    hist = t.stage_history
    assert hist.assign(entered_at=hist["entered_at"].astype(str)).values.tolist() == [
        [O1, "Prospecting", "2024-01-10 09:00:00+00:00"],
        [O1, "Diseño Propuesta", "2024-01-20 09:00:00+00:00"],
        [O1, "Closed Won", "2024-03-01 12:00:00+00:00"],
        [O2, "Negociación", "2024-02-01 10:00:00+00:00"],
        [O2, "Closed Lost", "2024-03-20 10:00:00+00:00"],
        [O4, "Diseño Propuesta", "2024-02-05 08:00:00+00:00"],
    ]
    fields = t.field_history
    o1_amounts = fields[(fields["opportunity_id"] == O1) & (fields["field"] == "amount")]
    assert o1_amounts["value"].astype(float).tolist() == [1800.0, 2001.0]  # converted, each change once
    o1_close = fields[(fields["opportunity_id"] == O1) & (fields["field"] == "expected_close_date")]
    assert o1_close["value"].tolist() == ["2024-02-15T00:00:00Z", "2024-03-01T00:00:00Z"]
    acts = t.activities
    assert acts[["opportunity_id", "type", "direction"]].values.tolist() == [[O1, "call", "inbound"], [O2, "meeting", None]]
    assert acts["occurred_at"].astype(str).tolist() == ["2024-01-15 14:00:00+00:00", "2024-02-10 15:00:00+00:00"]
    report = got.report
    assert report["Opportunity.csv"]["deleted rows dropped"] == 1
    assert report["deals created at a later stage (entered after the fact)"] == 2  # O2 and O4
    assert report["OpportunityHistory rows that were amount or close-date edits"] == 1
    assert report["activities by what they are linked to"]["Task: on an account only"] == 1
    assert report["currencies"] == {"USD": 2, "EUR": 1}
    assert (report["won"], report["lost"], report["open"]) == (1, 1, 1)
    assert report["control bytes dropped from columns oppscore does not read (values)"] == {"opportunity.CSV: Notes_Html__c": 2}


def test_the_import_validates_trains_and_scores(tmp_path: Path, monkeypatch) -> None:
    """Three deals are too few to learn from: train serves the configured weights' rates and
    says so, and score runs on it; what counts is that every step runs on an importer's output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "canonical"
    result = runner.invoke(app, ["import", "salesforce", str(_export(tmp_path / "sf")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "OpportunityStage.csv (SortOrder" in (out / "oppscore.toml").read_text(encoding="utf-8")
    validated = load_export(out, load_settings(out / "oppscore.toml"), utc_now())
    assert len(validated.tables.field_history) > 0
    assert runner.invoke(app, ["validate", "--data", str(out)]).exit_code == 0
    trained = runner.invoke(app, ["train", "--data", str(out)])
    assert trained.exit_code == 0, trained.output
    assert "champion: version 1" in trained.output and "no backtest was possible" in " ".join(trained.output.split())
    scored = runner.invoke(app, ["score", "--data", str(out), "--out", "scores.csv", "--as-of", "2024-03-10"])
    assert scored.exit_code == 0, scored.output
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert set(scores["opportunity_id"]) == {O2, O4}  # open on March 10; O1 was won on March 1
    assert scores["win_probability"].between(0, 1).all()


def test_the_developer_org_sample_imports_with_a_report(tmp_path: Path) -> None:
    """Degenerate on purpose (one instant, no lost deal): a clear report, never a traceback."""
    assert DEVORG.exists(), f"the shared sample is missing at {DEVORG}"
    out = tmp_path / "devorg"
    result = runner.invoke(app, ["import", "salesforce", str(DEVORG), "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as read, whatever width the terminal wrapped it to
    assert "no lost stage in the data" in said and "opportunities imported" in said
    assert runner.invoke(app, ["validate", "--data", str(out)]).exit_code == 0


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (lambda f: (f / "opportunity.CSV").unlink(), "missing Opportunity.csv"),
        (lambda f: (f / "OpportunityHistory.csv").write_text('"Id","OpportunityId","StageName"\n"1","2","x"\n'), "OpportunityHistory.csv line 1, column CreatedDate: found no such column"),
        (lambda f: (f / "Task.csv").write_bytes(b'"Id","WhatId"\r\n"00T1","006\x00\x01"\r\n'), "Task.csv line 2, column WhatId: found"),
        # a NUL in a field oppscore reads is an error; line 4: the rich text before it spans two lines
        (lambda f: (f / "opportunity.CSV").write_bytes((f / "opportunity.CSV").read_bytes().replace(b'"Closed Lost"', b'"Closed\x00Lost"')), "opportunity.CSV line 4, column StageName: found"),
        (lambda f: (f / "OpportunityHistory.csv").write_text('"Id","OpportunityId","CreatedDate","stage_name","STAGENAME"\n"1","006A00000000001AAA","2024-01-10","x","y"\n'),
         "OpportunityHistory.csv line 1, column stage_name and STAGENAME: found 2 columns that read as StageName, expected one column named StageName"),
        (lambda f: (f / "CurrencyType.csv").write_text('"Id","IsoCode","ConversionRate","IsCorporate"\n"1","USD","1.0","1"\n'), "column CurrencyIsoCode: found 'EUR', expected a currency listed in CurrencyType.csv"),
        (lambda f: (f / "Event.csv").write_text('"Id","WhatId","StartDateTime"\n"1","006A00000000002AAA","next tuesday"\n'), "Event.csv line 2, column StartDateTime: found 'next tuesday'"),
    ],
)
def test_bad_input_exits_1_naming_file_line_and_column(tmp_path: Path, break_it, named: str) -> None:
    folder = _export(tmp_path / "sf")
    break_it(folder)
    result = runner.invoke(app, ["import", "salesforce", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert named in " ".join(result.output.split()) and "Traceback" not in result.output


def test_problems_are_collected_not_the_first_only(tmp_path: Path) -> None:
    folder = _export(tmp_path / "sf")
    (folder / "Event.csv").write_text('"Id","WhatId","StartDateTime"\n"1","006A00000000002AAA","soon"\n"2","006A00000000002AAA","later"\n')
    with pytest.raises(ExportInvalid) as caught:
        import_salesforce(folder)
    assert len(caught.value.problems) == 2


HEADER_NAMES = ["Name", "StageName", "Stage_Name", "stagename", "Amount", "amount", "Id", "Budget_Confirmed__c", "BudgetConfirmed__c",
                "budget_confirmed__c", "Team__c", "Notes__c", "CreatedDate", "Created_Date", "IsWon", "Region__c", ""]


@given(extra=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(["", "x", "a\x00b", "2024-01-01", "<p>\n</p>", "1"])), max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_whatever_the_header_an_import_succeeds_or_names_the_problem(tmp_path_factory, extra) -> None:
    """Repeated names, names equal but for case or underscores, NUL bytes anywhere: never a
    traceback. A column read twice over resolves to the exact name; control bytes in a column
    oppscore reads are a problem with its line."""
    folder = _export(tmp_path_factory.mktemp("sf"), extra)
    try:
        got = import_salesforce(folder)
    except ExportInvalid as e:
        assert all(p.table == "opportunity.CSV" for p in e.problems), str(e)
        return
    assert list(got.tables.opportunities["opportunity_id"]) == [O1, O2, O4]
    assert got.report["won"] == 1 and got.report["lost"] == 1
