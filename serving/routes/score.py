"""POST /v1/score: the CRM's call. The route converts and delegates; the scoring is features'."""

from __future__ import annotations

import logging
import time

import pandas as pd
from fastapi import Request, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from features.errors import OppscoreError
from features.payload import records_to_tables
from features.times import to_utc
from scoring.history import ScoreHistory
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


def history_of(app) -> ScoreHistory | None:
    """The service's score history, opened once: when recording is switched on (then created if
    need be), or when one exists to read the previous scores from; else None. A history that
    cannot be opened never fails a score: it is logged, scores go without the change since the
    last run, and opening is tried again a minute later."""
    opened = getattr(app.state, "history", None)
    if opened is None and time.monotonic() >= getattr(app.state, "history_retry_at", 0.0):  # not cached while absent: `oppscore score` may create it later
        settings = app.state.settings
        exists = settings.database_url is not None or (settings.home / "history.db").exists()
        if exists or settings.serving.record_scores:
            try:
                opened = app.state.history = ScoreHistory.of(settings)
            except HISTORY_ERRORS as exc:
                app.state.history_retry_at = time.monotonic() + RETRY_HISTORY_SECONDS
                log.warning("score history unavailable (%s); scoring without the change since the last run", type(exc).__name__)
    return opened


def previous_scores(history: ScoreHistory | None, ids, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """The previous scores, or None when there is no history or it cannot be read now."""
    if history is None:
        return None
    try:
        return history.previous(ids, as_of)
    except HISTORY_ERRORS as exc:
        log.warning("score history unreadable (%s); scoring without the change since the last run", type(exc).__name__)
        return None


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
    # the batch limit was checked before the body was validated (serving.deps.KeyFirstRoute)
    if len(req.opportunities) <= INLINE_UP_TO:
        return _answer(req, loaded, now, request)
    return await run_in_threadpool(_answer, req, loaded, now, request)


def _answer(req: ScoreRequest, loaded: Loaded, now: pd.Timestamp, request: Request) -> Response:
    bundle = loaded.bundle
    as_of = to_utc(req.as_of) if req.as_of is not None else now
    validated = records_to_tables(req.records(), bundle.spec.stages.config, now=max(now, as_of), typed=True)
    ids = [o.opportunity_id for o in req.opportunities]
    history = history_of(request.app)
    previous = previous_scores(history, ids, as_of)
    scores = score_ids(bundle, validated.tables, ids, as_of, previous)
    request.app.state.scores_served.inc(sum(s["status"] == "open" for s in scores))
    if history is not None and previous is not None and request.app.state.settings.serving.record_scores:
        opened = pd.DataFrame([{**s, "as_of": as_of} for s in scores if s["status"] == "open"])
        try:
            history.record(opened, now, loaded.version, "api")
        except HISTORY_ERRORS as exc:
            log.warning("could not record %d scores in the score history (%s)", len(opened), type(exc).__name__)
    for s in scores:
        s.pop("factors", None)
    answer = ScoreResponse.model_validate({"model_version": loaded.version, "model_source": loaded.source, "as_of": as_of.to_pydatetime(), "scores": scores})
    # checked against the schema once here; a Response is sent as it is, not validated again by FastAPI
    return Response(answer.model_dump_json(), media_type="application/json")
