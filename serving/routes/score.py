"""POST /v1/score: the CRM's call. The route converts and delegates; the scoring is features'."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from fastapi import Request, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from features.errors import OppscoreError
from features.payload import records_to_tables
from features.times import to_utc
from scoring.history import RunFacts, ScoreHistory
from scoring.score import score_ids
from scoring.store import Loaded
from serving.deps import LoadedDep, NowDep, v1_router
from serving.schemas import ErrorBody, ScoreRequest, ScoreResponse

router = v1_router("scores")
log = logging.getLogger(__name__)

ERRORS = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"},
    413: {"model": ErrorBody, "description": "batch or body too large"},
    422: {"model": ErrorBody, "description": "malformed request: every problem, each with its field path"},
    503: {"model": ErrorBody, "description": "no model loaded"},
}


HISTORY_ERRORS = (SQLAlchemyError, OSError, OppscoreError)
RETRY_HISTORY_SECONDS = 60.0
HISTORY_DEADLINE = 3.0  # seconds a request waits on the score history's database at most
_DATABASE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score-history")


def bounded(app, what: str, call, *args, handle: str = "history"):
    """`call(*args)` on the database's own threads, waited for HISTORY_DEADLINE at most: a
    database that accepts connections and never answers costs a request seconds, not minutes,
    and after one miss the handle it was called through (`app.state.<handle>`: the score
    history, the events' store) is dropped and left alone for RETRY_HISTORY_SECONDS (a thread
    still waiting on it is let be). None when it failed or did not answer in time."""
    try:
        return _DATABASE.submit(call, *args).result(timeout=HISTORY_DEADLINE)
    except (TimeoutError, *HISTORY_ERRORS) as exc:
        setattr(app.state, f"{handle}_retry_at", time.monotonic() + RETRY_HISTORY_SECONDS)
        setattr(app.state, handle, None)
        why = f"no answer within {HISTORY_DEADLINE:.0f} s" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("%s: database %s (%s); going on without it, trying again in %.0f s", handle, what, why, RETRY_HISTORY_SECONDS)
        return None


def database_at_hand(settings) -> bool:
    """Whether the score history's database exists, or is named (score history and events share it)."""
    return settings.database_url is not None or (settings.home / "history.db").exists()


def history_wanted(app) -> bool:
    """Whether scoring reads or writes a score history: one exists, or recording is on."""
    return database_at_hand(app.state.settings) or app.state.settings.serving.record_scores


def opened_once(app, handle: str, factory, wanted: bool):
    """`factory(settings)` opened once and kept as `app.state.<handle>`, on the database's
    threads; not opened when not `wanted` (not cached while absent: `oppscore score` may create
    the database later), and not tried again for a minute after it failed (`bounded`)."""
    opened = getattr(app.state, handle, None)
    if opened is None and wanted and time.monotonic() >= getattr(app.state, f"{handle}_retry_at", 0.0):
        opened = bounded(app, "unavailable", factory, app.state.settings, handle=handle)
        setattr(app.state, handle, opened)
    return opened


def history_of(app) -> ScoreHistory | None:
    """The service's score history: when recording is switched on (then created if need be),
    or when one exists to read the previous scores from; else None. A history that cannot be
    opened in time never fails a score: it is logged, scores go without the change since the
    last run, and opening is tried again a minute later."""
    return opened_once(app, "history", ScoreHistory.of, history_wanted(app))


def previous_scores(app, history: ScoreHistory | None, ids, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The previous scores, or None when there is no history or it cannot be read now."""
    if history is None:
        return None
    return bounded(app, "unreadable", history.previous, ids, as_of)


# Requests up to this many opportunities are scored on the event loop: a few milliseconds of
# work, less than the hand-over to a worker thread costs (≈ 1 ms of a ≈ 9 ms request, measured
# against uvicorn). Larger batches go to the thread pool, so that /healthz and the metrics of
# this worker still answer while a batch of hundreds is scored.
INLINE_UP_TO = 10


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, summary="score a batch of opportunities")
async def score(req: ScoreRequest, loaded: LoadedDep, now: NowDep, request: Request) -> Response:
    """Win probability, stall risk, score, grade, expected value and the top reasons of each
    opportunity, as of `as_of` (default now); with score history, the change since the last
    recorded score and why. Nothing sent is stored unless the operator switched on
    `[serving] record_scores`."""
    # the batch limit was checked before the body was validated (serving.deps.KeyFirstRoute);
    # with a score history, a database is involved: never on the event loop
    if len(req.opportunities) <= INLINE_UP_TO and not history_wanted(request.app):
        return _answer(req, loaded, now, request)
    return await run_in_threadpool(_answer, req, loaded, now, request)


def _answer(req: ScoreRequest, loaded: Loaded, now: pd.Timestamp, request: Request) -> Response:
    bundle = loaded.bundle
    as_of = to_utc(req.as_of) if req.as_of is not None else now
    validated = records_to_tables(req.records(), bundle.spec.stages.config, now=max(now, as_of), typed=True)
    ids = [o.opportunity_id for o in req.opportunities]
    history = history_of(request.app)
    previous = previous_scores(request.app, history, ids, as_of)
    scores = score_ids(bundle, validated.tables, ids, as_of, previous)
    request.app.state.scores_served.inc(sum(s["status"] == "open" for s in scores))
    if history is not None and previous is not None and request.app.state.settings.serving.record_scores:
        opened = pd.DataFrame([{**s, "as_of": as_of} for s in scores if s["status"] == "open"])
        bounded(request.app, f"did not take {len(opened)} scores", history.record, opened, now, loaded.version, "api", RunFacts.of(bundle))
    for s in scores:
        s.pop("factors", None)
    answer = ScoreResponse.model_validate({"model_version": loaded.version, "model_source": loaded.source, "as_of": as_of.to_pydatetime(), "scores": scores})
    # checked against the schema once here; a Response is sent as it is, not validated again by FastAPI
    return Response(answer.model_dump_json(), media_type="application/json")
