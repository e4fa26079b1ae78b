"""Scores by record id and events in: what a Flow, a button or a CRM card calls with just an
id, and what the CRM sends as deals change.

GET /v1/opportunities/{id} answers from the served export (`serve --data`), scored once per
export and champion (`routes.pipeline.view`), while the deal has no events and time has not
moved past the export; otherwise the deal alone is scored from its export rows with its events
laid over (`scoring.events`), as of the newest time of the export or of any event, and that
answer is kept until the deal's events, the champion or that time change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

import pandas as pd
from fastapi import HTTPException, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from features.errors import ExportInvalid
from features.tables import TIMESTAMPS
from features.times import to_utc
from scoring.events import Event, EventConflict, EventStore, live_end, live_tables
from scoring.score import score_ids, statuses
from serving.deps import LoadedDep, NowDep, SettingsDep, v1_router
from serving.routes.pipeline import records, view
from serving.routes.score import ERRORS, bounded, database_at_hand, history_of, opened_once, previous_scores
from serving.schemas import ErrorBody, EventsRequest, EventsResponse, OpportunityScore, Timestamp

router = v1_router("opportunities")
CACHED = 10_000  # deals whose live answer is kept
CLOCK_SKEW = pd.Timedelta(minutes=5)  # an event may be this far ahead of the service's clock
_lock = threading.Lock()
SCORE_FIELDS = ["stage", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors", "previous_score", "score_change", "why_changed"]


def store_of(app, create: bool = False) -> EventStore | None:
    """The events' store (in the score history's database): None when no database exists and
    none is to be made, or when it does not answer in time."""
    return opened_once(app, "events", EventStore.of, create or database_at_hand(app.state.settings))


def _unavailable() -> HTTPException:
    return HTTPException(503, detail="the events' database did not answer in time; try again shortly (nothing was stored)")


@router.post("/events", response_model=EventsResponse, summary="stage changes, activities, field changes and records as they happen",
             responses={**ERRORS, 409: {"model": ErrorBody, "description": "an event id already stored with other content"}})
async def events(req: EventsRequest, request: Request, now: NowDep) -> EventsResponse:
    """Stored once per event id, in any order; the deals' scores by id follow at once. A batch
    is stored whole or not at all."""
    return await run_in_threadpool(_store, req, request, now)


def _as_event(e, i: int, now: pd.Timestamp, problems: list[dict]) -> Event:
    """An event as stored: its row JSON-ready with every time in UTC (the same event sent with
    another offset is the same event), and a problem for a time after now."""
    row = e.row.model_dump(exclude_unset=e.table == "opportunities")  # scalars and datetimes: the times become UTC text here
    stamps = {}
    for col, value in row.items():
        if isinstance(value, datetime):
            stamps[col] = to_utc(pd.Timestamp(value))
    row.update({col: t.isoformat() for col, t in stamps.items()})
    at = to_utc(pd.Timestamp(e.changed_at)) if e.table == "opportunities" else stamps[TIMESTAMPS[e.table][0]]  # the row's own time orders it
    for col, t in {**stamps, **({"changed_at": at} if e.table == "opportunities" else {})}.items():
        if t > now + CLOCK_SKEW and col != "expected_close_date":
            problems.append({"loc": ["body", "events", i, *(["row"] if col != "changed_at" or e.table != "opportunities" else []), col],
                             "msg": f"found {t.isoformat()}, expected a time no later than now ({now:%Y-%m-%dT%H:%M}Z): events are what happened", "type": "value_error"})
    return Event(e.event_id, e.table, row, at)


def _store(req: EventsRequest, request: Request, now: pd.Timestamp) -> EventsResponse:
    problems: list[dict] = []
    converted = [_as_event(e, i, now, problems) for i, e in enumerate(req.events)]
    if problems:
        raise HTTPException(422, detail=problems[:100])
    store = store_of(request.app, create=True)
    if store is None:
        raise _unavailable()
    try:
        stored = bounded(request.app, "did not take events", store.add, converted, now, handle="events")
    except EventConflict as exc:
        raise HTTPException(409, detail=str(exc)) from None
    if stored is None:
        raise _unavailable()
    total = bounded(request.app, "unreadable", store.count, handle="events")
    return EventsResponse(accepted=stored.accepted, duplicates=stored.duplicates, opportunities=stored.opportunities, stored=total or 0)


@router.get("/opportunities/{opportunity_id}", response_model=OpportunityScore, summary="the latest score of one record, by its id",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def opportunity(request: Request, loaded: LoadedDep, settings: SettingsDep, now: NowDep,
                opportunity_id: str = Path(min_length=1, max_length=200),
                as_of: Timestamp | None = Query(default=None, description="score as of this time (default: the newest time of the served export or of any event)")) -> Response:
    """Win probability, stall risk, score, grade, reasons and the change since the last run of
    one opportunity, from the served export and the events sent since."""
    app = request.app
    v = view(request, loaded, settings, now) if app.state.data is not None else None
    tables = v.validated.tables if v is not None else None
    store = store_of(app)
    mine = bounded(app, "unreadable", store.of_deals, [opportunity_id], handle="events") if store is not None else []
    latest = bounded(app, "unreadable", store.latest, handle="events") if store is not None else None
    if mine is None:
        raise _unavailable()
    end = to_utc(pd.Timestamp(as_of)) if as_of is not None else live_end(tables, latest)
    if end is None:
        raise HTTPException(404, detail=f"no opportunity {opportunity_id!r}: this service serves no export (`serve --data DIR`) and has received no events")
    key = (opportunity_id, loaded.version, loaded.source, end, tuple(sorted(e.event_id for e in mine)), v.key if v is not None else None)
    cache = getattr(app.state, "live_scores", None)
    if cache is None:
        cache = app.state.live_scores = OrderedDict()
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    answer = _from_view(v, opportunity_id, loaded) if not mine and v is not None and end == v.as_of else None
    if answer is None:
        answer = _score_live(app, loaded, tables, opportunity_id, mine, end, now)
    response = _respond(answer, loaded, end, len(mine))
    with _lock:
        cache[key] = response
        while len(cache) > CACHED:
            cache.popitem(last=False)
    return response


def _from_view(v, opportunity_id: str, loaded) -> dict | None:
    """The deal's answer from the served export's scores: its scored row when it is open, its
    status when it is not; None when the export does not hold it."""
    with _lock:
        if v.positions is None:
            ids = v.validated.tables.opportunities["opportunity_id"].to_numpy(dtype=object)
            status, _, _ = statuses(loaded.bundle, v.validated.tables, ids, v.as_of)
            v.statuses = dict(zip(ids.tolist(), status.tolist(), strict=True))
            v.positions = {oid: i for i, oid in enumerate(v.deals["opportunity_id"].tolist())}
    i = v.positions.get(opportunity_id)
    if i is not None:
        row = records(v.deals.iloc[[i]])[0]
        return {"opportunity_id": opportunity_id, "status": "open", **{k: row.get(k) for k in SCORE_FIELDS}}
    status = v.statuses.get(opportunity_id)
    return None if status is None or status == "open" else {"opportunity_id": opportunity_id, "status": status}


def _score_live(app, loaded, tables, opportunity_id: str, mine: list[Event], end: pd.Timestamp, now: pd.Timestamp) -> dict:
    bundle = loaded.bundle
    try:
        live = live_tables(tables, opportunity_id, mine, bundle.spec.stages.config, max(now, end))
    except LookupError:
        held = "" if not mine else f" ({len(mine)} event(s) hold rows of it, but no opportunities record with created_at and amount)"
        raise HTTPException(404, detail=f"no opportunity {opportunity_id!r} in the served export or the events{held}") from None
    except ExportInvalid as exc:
        raise HTTPException(409, detail=f"the rows of opportunity {opportunity_id!r} (export and events) break the contract: " + "; ".join(str(p) for p in exc.problems[:5])) from None
    previous = previous_scores(app, history_of(app), [opportunity_id], end)
    return score_ids(bundle, live, [opportunity_id], end, previous)[0]


def _respond(answer: dict, loaded, end: pd.Timestamp, events: int) -> Response:
    answer = {k: v for k, v in answer.items() if k != "factors"}
    for k in ("previous_score", "score_change"):
        if answer.get(k) is not None:
            answer[k] = int(answer[k])
    body = OpportunityScore.model_validate({**answer, "model_version": loaded.version, "model_source": loaded.source, "as_of": end.to_pydatetime(), "events": events})
    return Response(body.model_dump_json(), media_type="application/json")
