"""Local stand-ins for Salesforce's Bulk API 2.0 and HubSpot's batch update, following their
documented protocols (job states, failedResults CSV, 207 multi-status, 401 bodies), served on
a local port by a real HTTP server so the push goes over the wire as it would to the CRM."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

TOKEN = "good-token"
REFRESH, CLIENT = "refresh-me", "oppscore-app"  # the refresh grant the fakes accept
EXPIRED_SF = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
EXPIRED_HS = {"status": "error", "message": "The OAuth token used to make this call expired 2 hour(s) ago.", "correlationId": "x", "category": "EXPIRED_AUTHENTICATION"}


def salesforce(refuse: dict[str, str] | None = None, fail_job: str | None = None, version: str = "62.0", refuse_upload: bool = False) -> FastAPI:
    """Refuses the records in `refuse` (18-character id → Salesforce's error text) and takes the
    rest; `fail_job`: the job ends Failed with this message, none of its rows processed;
    `refuse_upload`: every upload is answered 400 (the job stays Open until someone aborts it).
    As lenient as Salesforce where it is: a Content-Type of text/csv with a charset (what
    simple-salesforce sends), result paths with or without their trailing slash."""
    app = FastAPI()
    app.state.jobs, app.state.records = {}, {}
    refuse = refuse or {}
    base = f"/services/data/v{version}/jobs/ingest"

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if not authorised(request) and request.url.path != "/services/oauth2/token":
            return JSONResponse(EXPIRED_SF, status_code=401)
        return await call_next(request)

    @app.post("/services/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}  # form-encoded, as RFC 6749 sends it
        if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == REFRESH and form.get("client_id") == CLIENT:
            return JSONResponse({"access_token": TOKEN, "instance_url": str(request.base_url).rstrip("/"), "token_type": "Bearer", "issued_at": "1764950000000"})
        return JSONResponse({"error": "invalid_grant", "error_description": "expired access/refresh token"}, status_code=400)

    @app.post(base)
    async def create(request: Request) -> dict:
        body = await request.json()
        assert body["object"] == "Opportunity" and body["operation"] == "upsert" and body["externalIdFieldName"] == "Id" and body["contentType"] == "CSV"
        job_id = f"750{len(app.state.jobs) + 1:012d}AAA"
        app.state.jobs[job_id] = {"id": job_id, "state": "Open", "object": "Opportunity", "operation": "upsert", "rows": [], "header": []}
        return {"id": job_id, "state": "Open", "object": "Opportunity", "operation": "upsert", "contentUrl": f"services/data/v{version}/jobs/ingest/{job_id}/batches"}

    @app.put(base + "/{job_id}/batches")
    async def upload(job_id: str, request: Request) -> Response:
        job = app.state.jobs[job_id]
        if job["state"] != "Open" or request.headers.get("content-type", "").split(";")[0].strip().lower() != "text/csv":
            return JSONResponse([{"errorCode": "INVALIDJOBSTATE", "message": "upload only to an Open job, as text/csv"}], status_code=400)
        if refuse_upload:
            return JSONResponse([{"errorCode": "INVALID_FIELD", "message": "No such column 'Win_Probability__c' on entity 'Opportunity'"}], status_code=400)
        text = (await request.body()).decode("utf-8")
        assert "\r\n" not in text, "lineEnding LF was promised"
        reader = csv.reader(io.StringIO(text))
        job["header"] = next(reader)
        job["rows"] += list(reader)
        return Response(status_code=201)

    @app.patch(base + "/{job_id}")
    async def close(job_id: str, request: Request) -> dict:
        job = app.state.jobs[job_id]
        wanted = (await request.json()).get("state")
        if wanted == "Aborted" and job["state"] in ("Open", "UploadComplete", "InProgress"):
            job["state"] = "Aborted"
        elif wanted == "UploadComplete" and job["state"] == "Open":
            job["state"] = "UploadComplete"
        else:
            return JSONResponse([{"errorCode": "INVALIDJOBSTATE", "message": f"the job is {job['state']}: it cannot become {wanted}"}], status_code=400)
        return {"id": job_id, "state": job["state"], "object": "Opportunity", "operation": "upsert"}

    @app.get(base + "/{job_id}")
    def info(job_id: str) -> dict:
        job = app.state.jobs[job_id]
        if job["state"] == "UploadComplete":  # the first poll sees it in progress, the next one done
            job["state"] = "InProgress"
        elif job["state"] == "InProgress" and fail_job:
            job.update(state="Failed", errorMessage=fail_job, processed=0, failed=0)
        elif job["state"] == "InProgress":
            for r in job["rows"]:
                if r[0] not in refuse:
                    app.state.records[r[0]] = dict(zip(job["header"], r, strict=True))
            job.update(state="JobComplete", processed=len(job["rows"]), failed=sum(r[0] in refuse for r in job["rows"]))
        return {"id": job_id, "state": job["state"], "numberRecordsProcessed": job.get("processed", 0), "numberRecordsFailed": job.get("failed", 0),
                **({"errorMessage": job["errorMessage"]} if "errorMessage" in job else {})}

    def results(header: list[str], rows: list[list[str]]) -> PlainTextResponse:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return PlainTextResponse(out.getvalue(), media_type="text/csv")

    @app.get(base + "/{job_id}/successfulResults")
    @app.get(base + "/{job_id}/successfulResults/")
    def successful_results(job_id: str) -> PlainTextResponse:
        job = app.state.jobs[job_id]
        done = job["state"] == "JobComplete"
        return results(["sf__Id", "sf__Created", *job["header"]], [[r[0], "false", *r] for r in job["rows"] if done and r[0] not in refuse])

    @app.get(base + "/{job_id}/failedResults")
    @app.get(base + "/{job_id}/failedResults/")
    def failed_results(job_id: str) -> PlainTextResponse:
        job = app.state.jobs[job_id]
        done = job["state"] == "JobComplete"
        return results(["sf__Id", "sf__Error", *job["header"]], [["", refuse[r[0]], *r] for r in job["rows"] if done and r[0] in refuse])

    @app.get(base + "/{job_id}/unprocessedrecords/")
    @app.get(base + "/{job_id}/unprocessedRecords")
    @app.get(base + "/{job_id}/unprocessedRecords/")
    def unprocessed(job_id: str) -> PlainTextResponse:
        job = app.state.jobs[job_id]
        return results(job["header"], job["rows"] if job["state"] != "JobComplete" else [])

    return app


def hubspot(missing: set[str] | None = None, unknown_property: str | None = None, rate_limited_once: bool = False) -> FastAPI:
    """Deals in `missing` do not exist (a 207 names them); `unknown_property`: every batch that
    sets it is refused whole (400); `rate_limited_once`: the first call answers 429."""
    app = FastAPI()
    app.state.deals, app.state.calls = {}, 0
    missing = missing or set()

    @app.post("/oauth/v1/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}  # form-encoded, as RFC 6749 sends it
        if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == REFRESH and form.get("client_id") == CLIENT:
            return JSONResponse({"access_token": TOKEN, "refresh_token": REFRESH, "expires_in": 1800, "token_type": "bearer"})
        return JSONResponse({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}, status_code=400)

    @app.post("/crm/v3/objects/deals/batch/update")
    async def update(request: Request) -> Response:
        app.state.calls += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse(EXPIRED_HS, status_code=401)
        if rate_limited_once and app.state.calls == 1:
            return JSONResponse({"status": "error", "message": "You have reached your secondly limit.", "category": "RATE_LIMITS"}, status_code=429, headers={"Retry-After": "0"})
        inputs = (await request.json())["inputs"]
        assert len(inputs) <= 100, "at most 100 inputs per batch"
        if unknown_property and any(unknown_property in i["properties"] for i in inputs):
            return JSONResponse({"status": "error", "message": f'Property values were not valid: [{{"name":"{unknown_property}","message":"Property does not exist"}}]',
                                 "category": "VALIDATION_ERROR"}, status_code=400)
        results, errors = [], []
        for i in inputs:
            if i["id"] in missing:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some DEAL objects, they may be deleted or not exist.", "context": {"ids": [i["id"]]}})
            else:
                app.state.deals[i["id"]] = i["properties"]
                results.append({"id": i["id"], "properties": i["properties"]})
        body = {"status": "COMPLETE", "results": results, "startedAt": "2026-12-05T00:00:00Z", "completedAt": "2026-12-05T00:00:01Z"}
        if errors:
            return JSONResponse({**body, "numErrors": len(errors), "errors": errors}, status_code=207)
        return JSONResponse(body)

    return app


@contextmanager
def serving(app: FastAPI):
    """The app on a free local port, for the duration; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
