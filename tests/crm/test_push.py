"""`export-scores --push` against local servers that follow Bulk API 2.0 and HubSpot's batch
update: success, partial failure (every refused row reported by id and reason), a job that
fails, rate limits, an expired token, a CRM that is not there."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from crm import hubspot_update as hubspot
from crm import salesforce_upsert as salesforce
from crm.calls import CrmUnavailable, Refresh
from crm.scores_file import read_scores
from features.settings import CrmConfig
from oppscore.cli import app
from tests.crm import fake_crm
from tests.crm.conftest import scores_table

runner = CliRunner()


def _salesforce_env(monkeypatch, url: str, token: str = fake_crm.TOKEN) -> None:
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", token)
    monkeypatch.setenv("OPPSCORE_CRM__POLL_SECONDS", "0.01")


def _push(args: list[str]):
    return runner.invoke(app, ["export-scores", *args, "--push"])


def test_salesforce_push_writes_every_row(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    fake = fake_crm.salesforce()
    with fake_crm.serving(fake) as url:
        _salesforce_env(monkeypatch, url)
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 0, result.output
    assert "4 of 4 records written" in result.output
    sent = pd.read_csv(tmp_path / "sf" / "Opportunity-upsert.csv", dtype=str, keep_default_na=False)
    assert fake.state.records == {r["Id"]: r for r in sent.to_dict("records")}  # what the file says is what Salesforce holds


def test_salesforce_partial_failure_names_each_refused_row(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    refuse = {"006Hp000015Yh7mIAC": "ENTITY_IS_DELETED:entity is deleted:--", "006Hp000015Yh7wIAC": "FIELD_CUSTOM_VALIDATION_EXCEPTION:Close date required:--"}
    fake = fake_crm.salesforce(refuse)
    with fake_crm.serving(fake) as url:
        _salesforce_env(monkeypatch, url)
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 1
    assert "2 of 4 records written" in result.output and "2 records not written" in result.output
    failures = pd.read_csv(tmp_path / "sf" / "push-failures.csv")
    assert dict(zip(failures["record_id"], failures["error"], strict=True)) == refuse
    assert set(fake.state.records) == {"006Hp000015Yh7kIAC", "006Hp000015Yh7xIAC"}


def test_a_failed_salesforce_job_reports_every_row_unprocessed(scores_csv: Path) -> None:
    rows = salesforce.upsert_frame(read_scores(scores_csv), CrmConfig())
    with fake_crm.serving(fake_crm.salesforce(fail_job="InvalidBatch : Field name not found : Opp_Score__c")) as url:
        pushed = salesforce.BulkApi(url, fake_crm.TOKEN, "62.0", poll_seconds=0.01).push(rows)
    assert pushed.written == 0 and list(pushed.failed["record_id"]) == list(rows["Id"])
    assert pushed.failed["error"].str.contains("the job ended Failed (InvalidBatch : Field name not found", regex=False).all()


def test_an_expired_salesforce_token_is_said_and_nothing_is_written(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    fake = fake_crm.salesforce()
    with fake_crm.serving(fake) as url:
        _salesforce_env(monkeypatch, url, token="expired")
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "401 (INVALID_SESSION_ID: Session expired or invalid)" in said and "SALESFORCE_ACCESS_TOKEN" in said
    assert fake.state.records == {} and fake.state.jobs == {}


def test_an_expired_token_is_refreshed_when_a_refresh_grant_is_configured(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    """A nightly push outlives its access token: with SALESFORCE_REFRESH_TOKEN and a client id
    it gets a new one and goes on; a refresh token Salesforce refuses is said as such."""
    fake = fake_crm.salesforce()
    with fake_crm.serving(fake) as url:
        _salesforce_env(monkeypatch, url, token="expired")
        monkeypatch.setenv("SALESFORCE_REFRESH_TOKEN", fake_crm.REFRESH)
        monkeypatch.setenv("SALESFORCE_CLIENT_ID", fake_crm.CLIENT)
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
        assert result.exit_code == 0, result.output
        assert "4 of 4 records written" in result.output and len(fake.state.records) == 4
        monkeypatch.setenv("SALESFORCE_REFRESH_TOKEN", "revoked")
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf2")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Salesforce refused to refresh the access token (400: invalid_grant: expired access/refresh token)" in said


def test_push_without_credentials_says_which_are_needed(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "HUBSPOT_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 1 and "SALESFORCE_INSTANCE_URL" in result.output
    assert (tmp_path / "sf" / "Opportunity-upsert.csv").exists()  # the files are written before the push is tried


def _hubspot_scores(tmp_path: Path, n: int) -> Path:
    base = scores_table(["1", "2", "3", "4"])
    table = pd.concat([base] * (n // 4), ignore_index=True)
    table["opportunity_id"] = [str(1000 + i) for i in range(len(table))]
    path = tmp_path / "scores.csv"
    table.to_csv(path, index=False)
    return path


def test_hubspot_push_in_batches_with_a_rate_limit_and_missing_deals(tmp_path: Path, monkeypatch) -> None:
    scores = _hubspot_scores(tmp_path, 240)
    fake = fake_crm.hubspot(missing={"1005", "1150"}, rate_limited_once=True)
    with fake_crm.serving(fake) as url:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", fake_crm.TOKEN)
        monkeypatch.setenv("OPPSCORE_CRM__HUBSPOT_BASE_URL", url)
        result = _push(["hubspot", "--scores", str(scores), "--out", str(tmp_path / "hs")])
    assert result.exit_code == 1 and "238 of 240 records written" in result.output
    failures = pd.read_csv(tmp_path / "hs" / "push-failures.csv", dtype=str)
    assert set(failures["record_id"]) == {"1005", "1150"} and failures["error"].str.startswith("OBJECT_NOT_FOUND").all()
    assert len(fake.state.deals) == 238 and fake.state.calls == 4  # 3 batches of ≤ 100, one of them tried again after the 429
    assert fake.state.deals["1000"]["oppscore_win_probability"] == "12.35"


def test_hubspot_batch_refused_whole_and_expired_token(tmp_path: Path) -> None:
    rows = hubspot.import_frame(read_scores(_hubspot_scores(tmp_path, 8)), CrmConfig())
    with fake_crm.serving(fake_crm.hubspot(unknown_property="oppscore_grade")) as url:
        pushed = hubspot.BatchUpdate(url, fake_crm.TOKEN).push(rows)
        assert pushed.written == 0 and len(pushed.failed) == 8
        assert pushed.failed["error"].str.contains("400 (VALIDATION_ERROR: Property values were not valid", regex=False).all()
        with pytest.raises(Exception, match="HubSpot answered 401 \\(EXPIRED_AUTHENTICATION"):
            hubspot.BatchUpdate(url, "expired").push(rows)
    with fake_crm.serving(fake_crm.hubspot()) as url:
        renewed = hubspot.BatchUpdate(url, "expired", refresh=Refresh(f"{url}/oauth/v1/token", fake_crm.REFRESH, fake_crm.CLIENT, "secret")).push(rows)
        assert renewed.written == 8 and renewed.failed.empty


def test_a_crm_that_is_not_there_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    rows = salesforce.upsert_frame(read_scores_from(scores_table()), CrmConfig())
    with pytest.raises(CrmUnavailable, match=f"Salesforce at http://127.0.0.1:{port} did not answer"):
        salesforce.BulkApi(f"http://127.0.0.1:{port}", "t", "62.0").push(rows)


def read_scores_from(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["as_of"] = pd.to_datetime(table["as_of"], utc=True)
    table["top_factors"] = table["top_factors"].map(__import__("json").loads)
    return table


def test_an_upload_salesforce_refuses_aborts_its_job_rather_than_leaving_it_open(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    fake = fake_crm.salesforce(refuse_upload=True)
    with fake_crm.serving(fake) as url:
        _salesforce_env(monkeypatch, url)
        result = _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")])
    assert result.exit_code == 1 and "INVALID_FIELD" in result.output
    assert [job["state"] for job in fake.state.jobs.values()] == ["Aborted"] and fake.state.records == {}


def test_the_test_salesforce_takes_what_simple_salesforce_sends_and_holds_what_oppscore_pushes(tmp_path: Path, scores_csv: Path, monkeypatch) -> None:
    """Salesforce's own Python client (simple-salesforce's Bulk API 2.0 upsert) against the test
    server: it is no stricter than Salesforce (a charset on text/csv, result paths as the client
    spells them, an abort answered), so what it proves of oppscore's push holds."""
    from simple_salesforce import Salesforce

    assert runner.invoke(app, ["export-scores", "salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf")]).exit_code == 0
    upsert = tmp_path / "sf" / "Opportunity-upsert.csv"
    refuse = {"006Hp000015Yh7mIAC": "ENTITY_IS_DELETED:entity is deleted:--"}
    by_client, by_oppscore = fake_crm.salesforce(refuse), fake_crm.salesforce(refuse)
    with fake_crm.serving(by_client) as url:
        sf = Salesforce(instance_url=url, session_id=fake_crm.TOKEN, version="62.0")
        sf.bulk2_url = f"{url}/services/data/v62.0/jobs/"  # simple-salesforce builds https:// URLs; the test server is plain HTTP
        (done,) = sf.bulk2.Opportunity.upsert(csv_file=str(upsert), external_id_field="Id", wait=0.01)
        assert done["numberRecordsProcessed"] == 4 and done["numberRecordsFailed"] == 1
        job = done["job_id"]
        def rows(text: str) -> list[dict]:
            return list(csv.DictReader(io.StringIO(text)))

        assert [(r["Id"], r["sf__Error"]) for r in rows(sf.bulk2.Opportunity.get_failed_records(job))] == list(refuse.items())
        assert len(rows(sf.bulk2.Opportunity.get_successful_records(job))) == 3 and rows(sf.bulk2.Opportunity.get_unprocessed_records(job)) == []
        opened = sf.bulk2.Opportunity._client.create_job("upsert", external_id_field="Id")
        sf.bulk2.Opportunity._client.abort_job(opened["id"], False)
        assert by_client.state.jobs[opened["id"]]["state"] == "Aborted"
    with fake_crm.serving(by_oppscore) as url:
        _salesforce_env(monkeypatch, url)
        assert _push(["salesforce", "--scores", str(scores_csv), "--out", str(tmp_path / "sf2")]).exit_code == 1  # one refused
    assert by_oppscore.state.records == by_client.state.records and len(by_client.state.records) == 3


def test_the_test_hubspot_takes_what_hubspot_api_client_sends(tmp_path: Path) -> None:
    """HubSpot's own Python client (hubspot-api-client's batch update) against the test server,
    with the rows oppscore's push sends: the same deals end with the same properties."""
    from hubspot import HubSpot
    from hubspot.crm.deals import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectBatchInput

    scores = read_scores(_hubspot_scores(tmp_path, 8))  # deals 1000–1007
    rows = hubspot.import_frame(scores, CrmConfig(), empty_reasons="")
    inputs = [SimplePublicObjectBatchInput(id=rid, properties=dict(zip(rows.columns[1:], values, strict=True))) for rid, *values in rows.itertuples(index=False)]
    by_client, by_oppscore = fake_crm.hubspot(missing={"1003"}), fake_crm.hubspot(missing={"1003"})
    with fake_crm.serving(by_client) as url:
        api = HubSpot(access_token=fake_crm.TOKEN, host=url)
        answer = api.crm.deals.batch_api.update(batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs))
        assert answer.status == "COMPLETE" and {r.id for r in answer.results} == {str(i) for i in range(1000, 1008)} - {"1003"}
    with fake_crm.serving(by_oppscore) as url:
        pushed = hubspot.BatchUpdate(url, fake_crm.TOKEN).push(rows)
    assert pushed.written == 7 and list(pushed.failed["record_id"]) == ["1003"]
    assert by_oppscore.state.deals == by_client.state.deals and len(by_client.state.deals) == 7
