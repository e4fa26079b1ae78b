"""Scores by record id and events in: what a Flow, a button or a CRM card calls with just an
id, and what the CRM sends as deals change.

GET /v1/opportunities/{id} answers from the served export (`serve --data`), scored once per
export and champion (`serving.views`), while the deal has no events and time has not moved
past the export; otherwise the deal alone is scored from its export rows with its events laid
over (`scoring.events`), as of the newest time of the export or of any event, and that answer
is kept until the deal's events, the champion or that time change.

POST /v1/events checks each batch against its deals before storing it (a batch that would
break a deal is 422, naming the event); DELETE /v1/events/{id} takes one back.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pandas as pd
from fastapi import HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from features.errors import ExportInvalid
from features.tables import TIMESTAMPS
from features.times import to_utc
from scoring.events import Event, EventConflict, EventsRefused, checker, live_end, live_tables
from scoring.score import score_ids
from serving.deps import DatabaseDep, ExportDep, LoadedDep, MaybeLoadedDep, NowDep, SettingsDep, v1_router
from serving.schemas import ERRORS, ID_PATTERN, ErrorBody, EventDeleted, EventsRequest, EventsResponse, OpportunityScore, Timestamp, Unavailable

router = v1_router("opportunities")
CACHED = 10_000  # deals whose live answer is kept
_lock = threading.Lock()


@router.post("/events", response_model=EventsResponse, summary="stage changes, activities, field changes and records as they happen",
             responses={**ERRORS, 409: {"model": ErrorBody, "description": "an event id already stored with other content"},
                        422: {"model": ErrorBody, "description": "malformed, or events that would break their deal (each named by its place in the batch)"}})
async def events(req: EventsRequest, request: Request, now: NowDep, database: DatabaseDep, export: ExportDep, loaded: MaybeLoadedDep, settings: SettingsDep) -> EventsResponse:
    """Stored once per event id, in any order; the deals' scores by id follow at once. A batch
    is stored whole or not at all: an event that would leave its deal breaking the contract (a
    stage the model does not know, a stage entered before the deal was created, …) refuses the
    batch. Sending the same batch again is always safe."""
    return await run_in_threadpool(_store, req, now, database, export, loaded, settings)


def _as_event(e) -> Event:
    """An event as stored: its row JSON-ready with every time in UTC (the same event sent with
    another offset is the same event), ordered by the row's own time (a record's: changed_at).
    A time after now is kept: it counts from its time on (a meeting booked for next week)."""
    row = e.row.model_dump(exclude_unset=e.table == "opportunities")  # scalars and datetimes: the times become UTC text here
    for col, value in row.items():
        if isinstance(value, datetime):
            row[col] = _utc_text(value)
    at = pd.Timestamp(_utc_text(e.changed_at) if e.table == "opportunities" else row[TIMESTAMPS[e.table][0]])
    return Event(e.event_id, e.table, row, at)


def _utc_text(value: datetime) -> str:
    return (value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()


def _stages(loaded, settings):
    """The stage names events are checked against: the served model's (what scoring will read),
    else the config's; None when neither is known (no stage name is refused then)."""
    return loaded.bundle.spec.stages.config if loaded is not None else settings.stages


def _store(req: EventsRequest, now: pd.Timestamp, database, export, loaded, settings) -> EventsResponse:
    converted = [_as_event(e) for e in req.events]
    handles = database.handles(create=True)  # 503 (serving.app) when it cannot be had now
    served = export.tables(now)
    check = checker(served.tables if served is not None else None, _stages(loaded, settings))
    try:
        stored = handles.events.add(converted, now, check, call=database.run)  # each database step within the deadline, the check outside it
    except EventConflict as exc:
        raise HTTPException(409, detail=str(exc)) from None
    except EventsRefused as exc:
        place = {e.event_id: i for i, e in enumerate(req.events)}
        raise HTTPException(422, detail=[{"loc": ["body", "events", place.get(r.event_id, 0), *(["row", r.field] if r.field else [])],
                                          "msg": f"event {r.event_id} (opportunity {r.opportunity_id}): {r.message}; nothing of this batch was stored",
                                          "type": "contract"} for r in exc.refusals[:100]]) from None
    total = database.optional("counting the events", handles.events.count)
    return EventsResponse(accepted=stored.accepted, duplicates=stored.duplicates, opportunities=stored.opportunities, stored=total or 0)


@router.delete("/events/{event_id}", response_model=EventDeleted, summary="take back one event sent in error",
               responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": Unavailable}})
def delete_event(request: Request, now: NowDep, database: DatabaseDep, export: ExportDep, loaded: MaybeLoadedDep, settings: SettingsDep,
                 event_id: str = PathParam(min_length=1, max_length=200, pattern=ID_PATTERN)) -> EventDeleted:
    """The event is removed and its deal scored without it; the corrected event may then be
    sent, under the same id or another. Refused (422) only when the deal would break the
    contract without it."""
    handles = database.handles()
    if handles is None:
        raise HTTPException(404, detail=f"no event {event_id!r}: no event has been stored here")
    served = export.tables(now)
    check = checker(served.tables if served is not None else None, _stages(loaded, settings), removing=True)
    try:
        gone = database.run("deleting an event", handles.events.delete, event_id, check, writes=True)
    except LookupError:
        raise HTTPException(404, detail=f"no event {event_id!r}") from None
    except EventsRefused as exc:
        raise HTTPException(422, detail=[{"loc": ["path", "event_id"], "msg": r.message, "type": "contract"} for r in exc.refusals[:100]]) from None
    return EventDeleted(deleted=gone.event_id, table=gone.kind, opportunity_id=gone.opportunity_id)


@router.get("/opportunities/{opportunity_id}", response_model=OpportunityScore, summary="the latest score of one record, by its id",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": Unavailable}})
def opportunity(request: Request, loaded: LoadedDep, now: NowDep, database: DatabaseDep, export: ExportDep,
                opportunity_id: str = PathParam(min_length=1, max_length=200, pattern=ID_PATTERN),
                as_of: Timestamp | None = Query(default=None, description="score as of this time (default: the newest time of the served export or of any event)")) -> Response:
    """Win probability, stall risk, score, grade, reasons and the change since the last run of
    one opportunity, from the served export and the events sent since."""
    v = export.view(loaded, now) if export.folder is not None else None
    tables = v.validated.tables if v is not None else None
    handles = database.handles()
    mine = database.run("reading the deal's events", handles.events.of_deals, [opportunity_id]) if handles is not None else []
    latest = database.run("reading the events' end", handles.events.latest, now) if handles is not None else None
    end = to_utc(pd.Timestamp(as_of)) if as_of is not None else live_end(tables, latest)
    if end is None:
        raise HTTPException(404, detail=f"no opportunity {opportunity_id!r}: this service serves no export (`serve --data DIR`) and has received no events")
    key = (opportunity_id, loaded.version, loaded.source, end, tuple(sorted(e.event_id for e in mine)), v.key if v is not None else None)
    cache = request.app.state.live_scores  # an OrderedDict made with the app: most recently used last
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    answer = v.answer_for(opportunity_id, loaded) if not mine and v is not None and end == v.as_of else None
    if answer is None:
        answer = _score_live(database, loaded, tables, opportunity_id, mine, end, now)
    response = _respond(answer, loaded, end, len(mine))
    with _lock:
        cache[key] = response
        while len(cache) > CACHED:
            cache.popitem(last=False)
    return response


def _score_live(database, loaded, tables, opportunity_id: str, mine: list[Event], end: pd.Timestamp, now: pd.Timestamp) -> dict:
    bundle = loaded.bundle
    try:
        live = live_tables(tables, opportunity_id, mine, bundle.spec.stages.config)
    except LookupError:
        held = "" if not mine else f" ({len(mine)} event(s) hold rows of it, but no opportunities record with created_at and amount yet)"
        raise HTTPException(404, detail=f"no opportunity {opportunity_id!r} in the served export or the events{held}") from None
    except ExportInvalid as exc:
        raise HTTPException(409, detail=f"the rows of opportunity {opportunity_id!r} (export and events) break the contract: " + "; ".join(str(p) for p in exc.problems[:5])
                            + " — DELETE /v1/events/{event_id} takes back an event named here") from None
    if live is None:
        return {"opportunity_id": opportunity_id, "status": "no stage yet"}
    history = database.history()
    previous = database.optional("reading the previous score", history.previous, [opportunity_id], end) if history is not None else None
    return score_ids(bundle, live, [opportunity_id], end, previous)[0]


def _respond(answer: dict, loaded, end: pd.Timestamp, events: int) -> Response:
    answer = {k: v for k, v in answer.items() if k != "factors"}
    for k in ("previous_score", "score_change"):
        if answer.get(k) is not None:
            answer[k] = int(answer[k])
    body = OpportunityScore.model_validate({**answer, "model_version": loaded.version, "model_source": loaded.source, "as_of": end.to_pydatetime(), "events": events})
    return Response(body.model_dump_json(), media_type="application/json")
