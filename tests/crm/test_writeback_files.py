"""Write-back files against the formats' documented rules: Bulk API 2.0 CSV (UTF-8, API names,
LF, RFC 4180 quoting, 0–100 percents, ISO date-times, 18-character ids with their checksum,
texts within the field's length as Salesforce counts it), the fields' source-format metadata,
HubSpot's import file and property definitions; and the developer-org sample's round trip."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from crm import hubspot_update as hubspot
from crm.salesforce_upsert import checksum, id18
from crm.scores_file import reasons_text, utf16_length
from features.settings import SALESFORCE_FIELDS
from oppscore.cli import app
from tests.conftest import SHARED
from tests.crm.conftest import IDS, scores_table

runner = CliRunner()
NS = {"m": "http://soap.sforce.com/2006/04/metadata"}
DEVORG = SHARED / "datasets" / "salesforce-devorg-sample"


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    text = raw.decode("utf-8")  # UTF-8 or this fails
    assert "\r" not in text.replace("\r", "") or "\r\n" not in text
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return reader.fieldnames, list(reader)


def test_salesforce_upsert_file_follows_bulk_api_csv_rules(tmp_path: Path, scores_csv: Path) -> None:
    result = runner.invoke(app, ["export-scores", "salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 0, result.output
    header, rows = _rows(tmp_path / "sf" / "Opportunity-upsert.csv")
    assert header == ["Id", *SALESFORCE_FIELDS.values()]
    assert not (tmp_path / "sf" / "Opportunity-upsert.csv").read_bytes().count(b"\r\n"), "lineEnding LF"
    for row, given_id in zip(rows, IDS, strict=True):
        assert len(row["Id"]) == 18 and row["Id"][:15] == given_id[:15] and row["Id"][15:] == checksum(given_id[:15])
        for col in ("Win_Probability__c", "Stall_Risk__c"):
            assert re.fullmatch(r"\d{1,3}\.\d{2}", row[col]) and 0 <= float(row[col]) <= 100  # Percent(5, 2): 0–100, plain
        assert re.fullmatch(r"[1-9]\d?", row["Opp_Score__c"]) and row["Opp_Grade__c"] in "ABCD"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000Z", row["Opp_Scored_At__c"])
        assert utf16_length(row["Opp_Reasons__c"]) <= 255
    assert [r["Win_Probability__c"] for r in rows] == ["12.35", "50.00", "99.90", "0.04"]
    assert rows[0]["Opp_Reasons__c"] == 'no activity for 21 days, "quiet" since the demo; in stage Negotiation\nReview'  # quotes and a line break, RFC 4180
    assert rows[1]["Opp_Reasons__c"].endswith("…") and utf16_length(rows[1]["Opp_Reasons__c"]) <= 255
    assert rows[2]["Opp_Reasons__c"] == "#N/A"  # no reasons: the field is emptied, not left stale
    assert "🎯" in rows[3]["Opp_Reasons__c"]


def test_salesforce_field_metadata_deploys_as_source(tmp_path: Path, scores_csv: Path) -> None:
    """Each field's XML against the Metadata API's rules for its type, and a permission set
    granting every field."""
    (tmp_path / "oppscore.toml").write_text('[crm]\nsalesforce_fields = { reasons = "Deal_Reasons__c" }\nreasons_length = 1000\n')
    result = runner.invoke(app, ["export-scores", "salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf"), "--config", str(tmp_path / "oppscore.toml")])
    assert result.exit_code == 0, result.output
    project = tmp_path / "sf" / "salesforce-metadata"
    assert json.loads((project / "sfdx-project.json").read_text())["packageDirectories"][0]["path"] == "force-app"
    printed = re.search(r"`cd (\S+) && sf project deploy start --source-dir (\S+) --target-org ORG`", "".join(result.output.split("\n")))  # rich wraps long words mid-word, and keeps the space where it wraps at one
    assert printed, result.output  # the command as printed runs where sf finds sfdx-project.json, its source dir relative to it
    assert Path(printed.group(1)) == project and (Path(printed.group(1)) / printed.group(2)).is_dir()
    fields = sorted((project / "force-app/main/default/objects/Opportunity/fields").glob("*.field-meta.xml"))
    names = {f.name.removesuffix(".field-meta.xml") for f in fields}
    header, rows = _rows(tmp_path / "sf" / "Opportunity-upsert.csv")
    assert names == {*SALESFORCE_FIELDS.values()} - {"Opp_Reasons__c"} | {"Deal_Reasons__c"}
    for path in fields:
        root = ET.parse(path).getroot()
        get = lambda tag, r=root: r.findtext(f"m:{tag}", namespaces=NS)  # noqa: E731
        assert root.tag == f"{{{NS['m']}}}CustomField" and get("fullName") == path.name.removesuffix(".field-meta.xml")
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,39}__c", get("fullName")) and "__" not in get("fullName")[:-3]
        assert 0 < len(get("label")) <= 40 and len(get("inlineHelpText")) <= 510
        kind = get("type")
        if kind in ("Percent", "Number"):
            precision, scale = int(get("precision")), int(get("scale"))
            assert 10 ** (precision - scale) > (100 if kind == "Percent" else 99)  # 100.00 % and a score of 99 fit
            for row in rows:  # every value the upsert writes fits the field as declared: digits before and after the point
                whole, _, decimals = row[get("fullName")].partition(".")
                assert len(whole) <= precision - scale and len(decimals) <= scale, (get("fullName"), row[get("fullName")], precision, scale)
        elif kind == "LongTextArea":
            assert 256 <= int(get("length")) <= 131_072 and int(get("length")) >= 1000 and get("visibleLines")
        elif kind == "Picklist":
            assert [v.findtext("m:fullName", namespaces=NS) for v in root.iterfind("m:valueSet/m:valueSetDefinition/m:value", NS)] == list("ABCD")
        else:
            assert kind == "DateTime"
    perms = ET.parse(project / "force-app/main/default/permissionsets/Oppscore_Scores.permissionset-meta.xml").getroot()
    granted = {p.findtext("m:field", namespaces=NS): (p.findtext("m:editable", namespaces=NS), p.findtext("m:readable", namespaces=NS)) for p in perms.iterfind("m:fieldPermissions", NS)}
    assert granted == {f"Opportunity.{n}": ("true", "true") for n in names}
    (objects,) = perms.findall("m:objectPermissions", NS)  # an upsert edits records: Read and Edit on Opportunity, no more
    allowed = {e.tag.split("}")[1]: e.text for e in objects}
    assert allowed == {"allowCreate": "false", "allowDelete": "false", "allowEdit": "true", "allowRead": "true", "modifyAllRecords": "false",
                       "object": "Opportunity", "viewAllRecords": "false"}
    order = [e.tag.split("}")[1] for e in perms]  # the Metadata API's element order
    assert order.index("label") < order.index("objectPermissions") and order.index("fieldPermissions") < order.index("hasActivationRequired")
    assert "Deal_Reasons__c" in header and not rows[1]["Deal_Reasons__c"].endswith("…")  # 1000 characters hold it whole


@pytest.mark.parametrize(("bad_id", "said"), [
    ("opp-000001", "row 2, column opportunity_id: found 'opp-000001'"),
    ("006hp000015yh7kiac", "row 2, column opportunity_id: found '006hp000015yh7kiac'"),  # case-folded: the checksum no longer matches
    ("001Hp00002g1VGeIAM", "found '001Hp00002g1VGeIAM', expected a Salesforce Opportunity id"),  # an account's id
])
def test_an_id_salesforce_cannot_take_is_named(tmp_path: Path, bad_id: str, said: str) -> None:
    table = scores_table()
    table.loc[1, "opportunity_id"] = bad_id
    table.to_csv(tmp_path / "scores.csv", index=False)
    result = runner.invoke(app, ["export-scores", "salesforce", "--scores", str(tmp_path / "scores.csv"), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 1 and said in " ".join(result.output.split())
    assert not (tmp_path / "sf").exists()


def test_a_scores_file_with_bad_values_is_named_and_a_bad_field_name_is_a_config_error(tmp_path: Path) -> None:
    table = scores_table()
    table.loc[2, "win_probability"] = 1.7
    table.to_csv(tmp_path / "scores.csv", index=False)
    result = runner.invoke(app, ["export-scores", "hubspot", "--scores", str(tmp_path / "scores.csv"), "--out", str(tmp_path / "hs")])
    assert result.exit_code == 1 and "scores.csv row 3, column win_probability: found 1.7, expected a probability in [0, 1]" in " ".join(result.output.split())
    (tmp_path / "oppscore.toml").write_text('[crm]\nsalesforce_fields = { score = "Score__Custom__c" }\n')
    result = runner.invoke(app, ["export-scores", "salesforce", "--scores", str(tmp_path / "scores.csv"), "--out", str(tmp_path / "sf"), "--config", str(tmp_path / "oppscore.toml")])
    assert result.exit_code == 1 and "crm.salesforce_fields" in result.output and "Score__Custom__c" in result.output
    (tmp_path / "cut.json").write_text('[{"opportunity_id": "006Hp000015Yh7k", "score": ')
    result = runner.invoke(app, ["export-scores", "salesforce", "--scores", str(tmp_path / "cut.json"), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 1 and "cut.json:notajsonfileofscoresthatcanberead" in "".join(result.output.split())  # a long path wraps anywhere


def test_hubspot_import_file_and_property_definitions(tmp_path: Path) -> None:
    table = scores_table(["9876543210", "12", "4000000001", "77"])
    table.to_json(tmp_path / "scores.json", orient="records", date_format="iso")
    result = runner.invoke(app, ["export-scores", "hubspot", "--scores", str(tmp_path / "scores.json"), "--out", str(tmp_path / "hs")])
    assert result.exit_code == 0, result.output
    header, rows = _rows(tmp_path / "hs" / "deals-import.csv")
    props = json.loads((tmp_path / "hs" / "properties.json").read_text())["inputs"]
    assert header == ["Record ID", *(p["name"] for p in props)]
    assert [r["Record ID"] for r in rows] == ["9876543210", "12", "4000000001", "77"]
    valid = {"number": {"number"}, "enumeration": {"select", "radio", "checkbox", "booleancheckbox"}, "string": {"text", "textarea"}, "datetime": {"date"}}
    for p in props:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]) and p["fieldType"] in valid[p["type"]] and p["groupName"] == "oppscore"
    grade = next(p for p in props if p["type"] == "enumeration")
    assert [o["value"] for o in grade["options"]] == list("ABCD")
    assert {r["oppscore_grade"] for r in rows} <= {"A", "B", "C", "D"}
    reasons = next(p["name"] for p in props if p["name"].endswith("reasons"))
    assert rows[2][reasons] == hubspot.NO_REASONS  # no reasons: a mark that replaces the last ones (an import skips an empty cell)
    mapping = json.loads((tmp_path / "hs" / "import-request.json").read_text())["files"][0]["fileImportPage"]["columnMappings"]
    assert [m["columnName"] for m in mapping] == header and mapping[0]["idColumnType"] == "HUBSPOT_OBJECT_ID"
    assert json.loads((tmp_path / "hs" / "property-group.json").read_text())["name"] == "oppscore"
    bad = scores_table(["006Hp000015Yh7k", *IDS[1:]])
    bad.to_csv(tmp_path / "sf-ids.csv", index=False)
    result = runner.invoke(app, ["export-scores", "hubspot", "--scores", str(tmp_path / "sf-ids.csv"), "--out", str(tmp_path / "hs2")])
    assert result.exit_code == 1 and "a HubSpot deal's Record ID (digits)" in " ".join(result.output.split())


@given(st.lists(st.text(min_size=1, max_size=400), max_size=6), st.integers(min_value=40, max_value=600))
def test_reasons_always_fit_their_field(sentences: list[str], length: int) -> None:
    text = reasons_text([{"sentence": s} for s in sentences], length)
    assert utf16_length(text) <= length
    kept = [s.strip() for s in sentences if s.strip()]
    if kept and utf16_length(kept[0]) <= length:
        assert text.startswith(kept[0])  # whole sentences first, in order


def test_ids_of_15_and_18_characters() -> None:
    assert id18("006Hp000015Yh7k") == "006Hp000015Yh7kIAC" == id18("006Hp000015Yh7kIAC")  # a real id from the developer org's export
    assert id18("006Hp000015Yh7kIAD") is None and id18("006Hp000015Yh7") is None and id18("006Hp000015Yh7k!") is None


def test_the_developer_org_sample_round_trips_with_every_open_deals_18_character_id(tmp_path: Path, monkeypatch) -> None:
    """import → train → score → export-scores on Salesforce's own sample records."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPPSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["import", "salesforce", str(DEVORG), "--out", "devorg"], ["train", "--data", "devorg"], ["score", "--data", "devorg", "--out", "scores.csv"],
                 ["export-scores", "salesforce", "--scores", "scores.csv", "--out", "crm"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    source = pd.read_csv(DEVORG / "opportunity.csv", dtype=str)
    open_ids = set(source.loc[source["IsClosed"] == "0", "Id"])
    _, rows = _rows(tmp_path / "crm" / "Opportunity-upsert.csv")
    assert {r["Id"] for r in rows} == open_ids and all(len(r["Id"]) == 18 for r in rows)
    # every record was made at one moment: no deal was watched for the stall horizon, so stall risk
    # is not known (never the configured win weight, issue 40): empty in the scores and the CRM's file
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["win_probability"].notna().all() and scores["stall_risk"].isna().all()
    assert all(r["Stall_Risk__c"] == "" and r["Win_Probability__c"] != "" for r in rows)
