"""Scores onto HubSpot deals: a CSV for the deals import (Record ID and one column per
property, with the import request that maps them), the property definitions as the CRM
properties API takes them, and the push as batch updates of deals.

Number properties take plain numbers (percentages 0–100, like the Salesforce fields), date-time
properties ISO 8601 in UTC, the grade is a select of A–D.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from crm.calls import CrmRefused, Pushed, Refresh, answered, client, renewed, unreachable
from crm.salesforce_upsert import csv_text
from crm.scores_file import crm_values
from features.errors import ExportInvalid, Problem
from features.settings import CrmConfig

GROUP = {"name": "oppscore", "label": "oppscore", "displayOrder": -1}
BATCH = 100  # the batch update endpoint takes at most 100 records per call
RETRIES = 3  # on 429 (rate limit) and 5xx, with the wait HubSpot asks for
DEALS = "0-3"  # HubSpot's object type id of deals

# output → (label, type, fieldType, description)
PROPERTIES = {
    "win_probability": ("Win probability (%)", "number", "number", "oppscore's calibrated chance that this deal is won within its label horizon (0–100)."),
    "stall_risk": ("Stall risk (%)", "number", "number", "oppscore's chance that this deal makes no forward progress in the coming stall horizon (0–100)."),
    "score": ("Deal score", "number", "number", "Win probability as a whole score from 1 to 99."),
    "grade": ("Deal grade", "enumeration", "select", "A to D, by the win-probability quartiles of the model's calibration slice."),
    "reasons": ("Score reasons", "string", "textarea", "The factors that pushed the score up or down, most important first."),
    "scored_at": ("Scored at", "datetime", "date", "The time the score describes (the export's end when it was scored)."),
}


NO_REASONS = "—"  # in the import file, where a deal has no reasons: an import skips an empty cell, which would leave the last reasons standing


def import_frame(scores: pd.DataFrame, crm: CrmConfig, source: str = "scores", empty_reasons: str = NO_REASONS) -> pd.DataFrame:
    """Record ID and a column per property; a record id that is not a HubSpot deal id (digits)
    is a problem naming its row. `empty_reasons`: what stands for no reasons (the batch update
    sends "", which empties the property; an import ignores empty cells)."""
    ids = scores["opportunity_id"].astype(str).str.strip()
    bad = ~ids.map(lambda i: bool(re.fullmatch(r"[1-9][0-9]{0,19}", i)))
    problems = [Problem(source, f"row {i + 1}", "opportunity_id", repr(ids.iloc[i]), "a HubSpot deal's Record ID (digits)") for i in range(len(ids)) if bad.iloc[i]][:50]
    if problems:
        raise ExportInvalid(problems)
    return pd.DataFrame({"Record ID": ids, **crm_values(scores, crm.hubspot_properties, crm.reasons_length, empty_reasons=empty_reasons)})


def property_definitions(crm: CrmConfig) -> dict:
    """The body of POST /crm/v3/properties/deals/batch/create."""
    inputs = []
    for output, name in crm.hubspot_properties.items():
        label, kind, field_type, description = PROPERTIES[output]
        prop = {"name": name, "label": label, "type": kind, "fieldType": field_type, "groupName": GROUP["name"], "description": description, "formField": False}
        if kind == "enumeration":
            prop["options"] = [{"label": g, "value": g, "displayOrder": i, "hidden": False} for i, g in enumerate("ABCD")]
        inputs.append(prop)
    return {"inputs": inputs}


def import_request(crm: CrmConfig, file_name: str) -> dict:
    """The `importRequest` part of POST /crm/v3/imports: each column mapped to its property,
    Record ID as the deal's id (updates only, never creates)."""
    mappings = [{"columnObjectTypeId": DEALS, "columnName": "Record ID", "propertyName": "hs_object_id", "idColumnType": "HUBSPOT_OBJECT_ID"}]
    mappings += [{"columnObjectTypeId": DEALS, "columnName": name, "propertyName": name} for name in crm.hubspot_properties.values()]
    return {"name": "oppscore scores", "importOperations": {DEALS: "UPDATE"}, "dateFormat": "YEAR_MONTH_DAY",
            "files": [{"fileName": file_name, "fileFormat": "CSV", "fileImportPage": {"hasHeader": True, "columnMappings": mappings}}]}


def write_files(scores: pd.DataFrame, crm: CrmConfig, out: Path, source: str = "scores") -> list[Path]:
    rows = import_frame(scores, crm, source)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "deals-import.csv": csv_text(rows),
        "import-request.json": json.dumps(import_request(crm, "deals-import.csv"), indent=2),
        "property-group.json": json.dumps(GROUP, indent=2),
        "properties.json": json.dumps(property_definitions(crm), indent=2, ensure_ascii=False),
    }
    for name, text in files.items():
        (out / name).write_bytes(text.encode("utf-8"))
    return [out / name for name in files]


@dataclass
class BatchUpdate:
    """POST /crm/v3/objects/deals/batch/update, 100 deals a call. A 207 names the records it
    refused; a 4xx refuses its whole batch (each of its deals reported); 429 and 5xx are tried
    again after the wait HubSpot asks for."""

    base_url: str
    token: str
    wait_seconds: float = 10.0
    refresh: Refresh | None = None

    def push(self, rows: pd.DataFrame, progress=lambda said: None) -> Pushed:
        self.progress = progress
        failed: list[dict] = []
        written = 0
        names = [c for c in rows.columns if c != "Record ID"]
        try:
            with client(self.base_url, self.token) as http:
                for start in range(0, len(rows), BATCH):
                    batch = rows.iloc[start:start + BATCH]
                    inputs = [{"id": rid, "properties": dict(zip(names, values, strict=True))} for rid, *values in batch.itertuples(index=False)]
                    response = self._post(http, {"inputs": inputs})
                    if response.status_code in (200, 201):
                        written += len(batch)
                    elif response.status_code == 207:
                        refused = self._refused(response.json(), set(batch["Record ID"]))
                        failed += refused
                        written += len(batch) - len({f["record_id"] for f in refused})
                    else:
                        said = f"HubSpot answered {response.status_code} ({answered(response)})"
                        failed += [{"record_id": rid, "error": said} for rid in batch["Record ID"]]
                    progress(f"HubSpot: {min(start + BATCH, len(rows)):,} of {len(rows):,} deals sent")
        except httpx.HTTPError as exc:
            raise unreachable("HubSpot", self.base_url, exc) from None
        return Pushed(len(rows), written, pd.DataFrame(failed, columns=["record_id", "error"]), "batch update")

    def _post(self, http: httpx.Client, body: dict) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            response = http.post("/crm/v3/objects/deals/batch/update", json=body)
            if response.status_code == 401 and renewed(http, self.refresh, "HubSpot", getattr(self, "progress", lambda said: None)):
                self.refresh = None  # once: a second 401 is not an expired token
                response = http.post("/crm/v3/objects/deals/batch/update", json=body)
            if response.status_code == 401:
                raise CrmRefused(f"HubSpot answered 401 ({answered(response)}): the access token (HUBSPOT_ACCESS_TOKEN) has expired or is not valid; "
                                 "get a new one (a private app's token, or refresh the OAuth token) and run again")
            if response.status_code != 429 and response.status_code < 500 or attempt == RETRIES:
                return response
            time.sleep(float(response.headers.get("Retry-After", self.wait_seconds)))
        return response

    @staticmethod
    def _refused(body: dict, sent: set[str]) -> list[dict]:
        """Each refused record of a 207 by id and HubSpot's reason; an error that names no record
        is reported against every record of the batch not confirmed in its results."""
        confirmed = {str(r.get("id")) for r in body.get("results", [])}
        out = []
        for error in body.get("errors", []):
            ids = [str(i) for i in (error.get("context") or {}).get("ids", [])] or sorted(sent - confirmed)
            out += [{"record_id": i, "error": f"{error.get('category', 'ERROR')}: {error.get('message', '')}"} for i in ids]
        return out
