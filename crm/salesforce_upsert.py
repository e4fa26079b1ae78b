"""Scores onto Salesforce Opportunities: a Bulk API 2.0 / Data Loader upsert file on `Id`, the
custom fields as source-format metadata with a permission set (deployed by an admin with
`sf project deploy start`), and the push itself as a Bulk API 2.0 ingest job.

The file follows Bulk API 2.0's CSV rules: UTF-8, a header of API names, LF line ends, RFC 4180
quoting, plain numbers (a Percent field takes 0–100), date-times as 2026-12-05T17:00:00.000Z,
and `#N/A` to empty a field (an empty cell leaves it as it was).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from crm.calls import CrmRefused, CrmUnavailable, Pushed, Refresh, answered, client, renewed, unreachable
from crm.scores_file import crm_values
from features.errors import ExportInvalid, Problem
from features.settings import CrmConfig

log = logging.getLogger(__name__)
OPPORTUNITY_PREFIX = "006"
CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
NULL = "#N/A"
METADATA_NS = "http://soap.sforce.com/2006/04/metadata"
PERMISSION_SET = "Oppscore_Scores"
MAX_UPLOAD_BYTES = 100_000_000  # Bulk API 2.0 takes up to 150 MB per job's upload; 100 MB leaves room for its encoding
DONE = {"JobComplete", "Failed", "Aborted"}


def checksum(id15: str) -> str:
    """The three characters that make a 15-character id case-insensitively unique: one per
    five characters, a bit per upper-case letter."""
    return "".join(CHECKSUM[sum(1 << i for i, c in enumerate(id15[k:k + 5]) if "A" <= c <= "Z")] for k in (0, 5, 10))


def id18(record_id: str) -> str | None:
    """The 18-character form of a 15- or 18-character Salesforce id (None when it is neither, or
    its checksum does not match: a mangled id, e.g. case-folded by a spreadsheet)."""
    if not re.fullmatch(r"[A-Za-z0-9]{15}([A-Z0-5]{3})?", record_id):
        return None
    full = record_id[:15] + checksum(record_id[:15])
    return full if len(record_id) == 15 or full == record_id else None


# output → (label, type, attributes, help text): the custom field each output is written to
FIELDS = {
    "win_probability": ("Win Probability", "Percent", {"precision": 5, "scale": 2}, "oppscore's calibrated chance that this opportunity is won within its label horizon (0–100 %)."),
    "stall_risk": ("Stall Risk", "Percent", {"precision": 5, "scale": 2}, "oppscore's chance that this opportunity makes no forward progress in the coming stall horizon (0–100 %)."),
    "score": ("Opp Score", "Number", {"precision": 2, "scale": 0}, "Win probability as a whole score from 1 to 99."),
    "grade": ("Opp Grade", "Picklist", {}, "A to D, by the win-probability quartiles of the model's calibration slice."),
    "reasons": ("Opp Reasons", "LongTextArea", {"visibleLines": 3}, "The factors that pushed the score up or down, most important first."),
    "scored_at": ("Opp Scored At", "DateTime", {}, "The time the score describes (the export's end when it was scored)."),
}


def upsert_frame(scores: pd.DataFrame, crm: CrmConfig, source: str = "scores") -> pd.DataFrame:
    """The upsert rows: Id (18 characters) and one column per field, values as Salesforce reads
    them. An id that is not an Opportunity id is a problem naming its row."""
    ids = [id18(str(i)) for i in scores["opportunity_id"]]
    problems = [Problem(source, f"row {i + 1}", "opportunity_id", repr(scores['opportunity_id'].iloc[i]),
                        "a Salesforce Opportunity id: 15 or 18 letters and digits starting with 006 (an 18-character id with its own checksum)")
                for i, full in enumerate(ids) if full is None or not full.startswith(OPPORTUNITY_PREFIX)][:50]
    if problems:
        raise ExportInvalid(problems)
    return pd.DataFrame({"Id": ids, **crm_values(scores, crm.salesforce_fields, crm.reasons_length, empty_reasons=NULL)})


def csv_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def _field_xml(output: str, name: str, crm: CrmConfig) -> bytes:
    """A CustomField in source format, its elements in the order Salesforce retrieves them
    (fullName first, the rest alphabetical)."""
    label, kind, attrs, help_text = FIELDS[output]
    values = {"label": label, "description": f"Written by oppscore ({output}).", "inlineHelpText": help_text, "externalId": "false",
              "required": "false", "trackHistory": "false", "type": kind, **{k: str(v) for k, v in attrs.items()}}
    if kind == "LongTextArea":
        values["length"] = str(max(crm.reasons_length, 256))  # a Long Text Area holds 256 characters or more
    root = ET.Element("CustomField", xmlns=METADATA_NS)
    ET.SubElement(root, "fullName").text = name
    for tag in sorted(values):
        ET.SubElement(root, tag).text = values[tag]
    if kind == "Picklist":
        value_set = ET.SubElement(root, "valueSet")
        ET.SubElement(value_set, "restricted").text = "true"
        definition = ET.SubElement(value_set, "valueSetDefinition")
        ET.SubElement(definition, "sorted").text = "false"
        for grade in "ABCD":
            value = ET.SubElement(definition, "value")
            ET.SubElement(value, "fullName").text = grade
            ET.SubElement(value, "default").text = "false"
            ET.SubElement(value, "label").text = grade
    ET.indent(root, "    ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _permission_set_xml(crm: CrmConfig) -> bytes:
    root = ET.Element("PermissionSet", xmlns=METADATA_NS)
    ET.SubElement(root, "description").text = "Read and edit Opportunities and the fields oppscore fills on them (assign it to the integration user that upserts the scores; sales users need only read access to the fields)."
    for name in sorted(crm.salesforce_fields.values()):
        perm = ET.SubElement(root, "fieldPermissions")
        ET.SubElement(perm, "editable").text = "true"
        ET.SubElement(perm, "field").text = f"Opportunity.{name}"
        ET.SubElement(perm, "readable").text = "true"
    ET.SubElement(root, "hasActivationRequired").text = "false"
    ET.SubElement(root, "label").text = "oppscore scores"
    # an upsert on Id edits existing records: Read and Edit on Opportunity, nothing more (no create,
    # delete or view-all); without it an integration user whose profile lacks them has every row refused
    objects = ET.SubElement(root, "objectPermissions")
    for tag, value in (("allowCreate", "false"), ("allowDelete", "false"), ("allowEdit", "true"), ("allowRead", "true"),
                       ("modifyAllRecords", "false"), ("object", "Opportunity"), ("viewAllRecords", "false")):
        ET.SubElement(objects, tag).text = value
    ET.indent(root, "    ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def write_files(scores: pd.DataFrame, crm: CrmConfig, out: Path, source: str = "scores") -> list[Path]:
    """The upsert file and a Salesforce DX project holding the fields and the permission set."""
    rows = upsert_frame(scores, crm, source)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "Opportunity-upsert.csv"]
    written[0].write_bytes(csv_text(rows).encode("utf-8"))
    project = out / "salesforce-metadata"
    fields = project / "force-app" / "main" / "default" / "objects" / "Opportunity" / "fields"
    perms = project / "force-app" / "main" / "default" / "permissionsets"
    fields.mkdir(parents=True, exist_ok=True)
    perms.mkdir(parents=True, exist_ok=True)
    (project / "sfdx-project.json").write_text(json.dumps({"packageDirectories": [{"path": "force-app", "default": True}], "name": "oppscore-fields",
                                                           "namespace": "", "sourceApiVersion": crm.salesforce_api_version}, indent=2) + "\n", encoding="utf-8")
    written.append(project / "sfdx-project.json")
    for output, name in crm.salesforce_fields.items():
        path = fields / f"{name}.field-meta.xml"
        path.write_bytes(_field_xml(output, name, crm))
        written.append(path)
    path = perms / f"{PERMISSION_SET}.permissionset-meta.xml"
    path.write_bytes(_permission_set_xml(crm))
    written.append(path)
    return written


@dataclass
class BulkApi:
    """A Bulk API 2.0 ingest job per upload of at most MAX_UPLOAD_BYTES: create (upsert on Id),
    upload the CSV, close (UploadComplete), poll until done, then read the failed and the
    unprocessed rows."""

    instance_url: str
    token: str
    version: str
    poll_seconds: float = 5.0
    timeout_seconds: float = 1800.0
    refresh: Refresh | None = None

    @property
    def jobs(self) -> str:
        return f"/services/data/v{self.version}/jobs/ingest"

    def push(self, rows: pd.DataFrame, progress=lambda said: None) -> Pushed:
        self.progress = progress
        failed, written, refs = [], 0, []
        try:
            with client(self.instance_url, self.token) as http:
                for chunk in _chunks(rows):
                    job = self._call(http, "POST", self.jobs, json={"object": "Opportunity", "externalIdFieldName": "Id", "contentType": "CSV",
                                                                    "operation": "upsert", "lineEnding": "LF", "columnDelimiter": "COMMA"}).json()
                    refs.append(job["id"])
                    progress(f"Bulk API job {job['id']}: uploading {len(chunk):,} rows")
                    self._upload(http, job["id"], chunk, progress)
                    state = self._wait(http, job["id"], progress)
                    lost = self._rows(http, f"{self.jobs}/{job['id']}/failedResults/", "sf__Error")
                    if state["state"] != "JobComplete":
                        said = f"not processed: the job ended {state['state']}" + (f" ({state.get('errorMessage')})" if state.get("errorMessage") else "")
                        lost = pd.concat([lost, self._rows(http, f"{self.jobs}/{job['id']}/unprocessedrecords/", None, said)], ignore_index=True)
                    failed.append(lost)
                    written += int(state.get("numberRecordsProcessed") or 0) - int(state.get("numberRecordsFailed") or 0)
        except httpx.HTTPError as exc:
            raise unreachable("Salesforce", self.instance_url, exc) from None
        failed_rows = pd.concat(failed, ignore_index=True) if failed else pd.DataFrame(columns=["record_id", "error"])
        return Pushed(len(rows), written, failed_rows, ", ".join(refs))

    def _upload(self, http: httpx.Client, job_id: str, chunk: pd.DataFrame, progress) -> None:
        """Upload and close; a job whose upload or close failed is aborted (as simple-salesforce
        does), not left Open in Setup → Bulk Data Load Jobs until Salesforce times it out. Once
        closed, a job goes on in Salesforce whatever happens here."""
        try:
            self._call(http, "PUT", f"{self.jobs}/{job_id}/batches", content=csv_text(chunk).encode("utf-8"), headers={"Content-Type": "text/csv"})
            self._call(http, "PATCH", f"{self.jobs}/{job_id}", json={"state": "UploadComplete"})
        except (CrmRefused, httpx.HTTPError):
            try:
                self._call(http, "PATCH", f"{self.jobs}/{job_id}", json={"state": "Aborted"})
                progress(f"Bulk API job {job_id}: aborted (nothing of it was written)")
            except (CrmRefused, httpx.HTTPError) as exc:  # the first failure is the one to tell
                log.warning("Bulk API job %s could not be aborted (%s): it stays Open until Salesforce closes it", job_id, exc)
            raise

    def _call(self, http: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
        response = http.request(method, url, **kwargs)
        if response.status_code == 401 and renewed(http, self.refresh, "Salesforce", getattr(self, "progress", lambda said: None)):
            self.refresh = None  # once: a second 401 is not an expired token
            response = http.request(method, url, **kwargs)
        if response.status_code == 401:
            raise CrmRefused(f"Salesforce answered 401 ({answered(response)}) to {method} {url}: the access token (SALESFORCE_ACCESS_TOKEN) has expired or "
                             "is not valid; get a new one (`sf org display --target-org ORG --json` prints accessToken) and run again")
        if response.status_code >= 400:
            raise CrmRefused(f"Salesforce answered {response.status_code} ({answered(response)}) to {method} {url}")
        return response

    def _wait(self, http: httpx.Client, job_id: str, progress) -> dict:
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            state = self._call(http, "GET", f"{self.jobs}/{job_id}").json()
            if state["state"] in DONE:
                return state
            progress(f"Bulk API job {job_id}: {state['state']}, {state.get('numberRecordsProcessed', 0):,} rows processed")
            if time.monotonic() > deadline:
                raise CrmUnavailable(f"Bulk API job {job_id} was still {state['state']} after {self.timeout_seconds:.0f} s; it goes on in Salesforce "
                                     "(Setup → Bulk Data Load Jobs); run again later, or raise [crm] push_timeout_seconds")
            time.sleep(self.poll_seconds)

    def _rows(self, http: httpx.Client, url: str, error_col: str | None, said: str = "") -> pd.DataFrame:
        """The failed (or unprocessed) rows the job reports, by record id and reason."""
        text = self._call(http, "GET", url).text
        if not text.strip():
            return pd.DataFrame(columns=["record_id", "error"])
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        ids = frame["Id"] if "Id" in frame.columns else frame.get("sf__Id", pd.Series("", index=frame.index))
        return pd.DataFrame({"record_id": ids.to_numpy(), "error": (frame[error_col] if error_col else pd.Series(said, index=frame.index)).to_numpy()})


def _chunks(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """Pieces whose CSV stays under one job's upload limit."""
    size = len(csv_text(rows.head(1000)).encode("utf-8")) / max(min(len(rows), 1000), 1)
    per = max(int(MAX_UPLOAD_BYTES / max(size, 1)), 1)
    return [rows.iloc[k:k + per] for k in range(0, len(rows), per)]
