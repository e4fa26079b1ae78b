"""POST /v1/score: the CRM's call. The route converts and delegates; the scoring is features'."""

from __future__ import annotations

import logging

import pandas as pd
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from features.payload import records_to_tables
from features.times import to_utc
from scoring.database import DatabaseUnavailable
from scoring.history import RunFacts
from scoring.score import score_ids
from scoring.store import Loaded
from serving.deps import DatabaseDep, LoadedDep, NowDep, v1_router
from serving.protocol import OTHERS_IN_FLIGHT, waited
from serving.schemas import ERRORS, ScoreRequest, ScoreResponse

router = v1_router("scores")
log = logging.getLogger(__name__)



# A request of up to this many opportunities is scored on the event loop when no other request
# of this worker is in progress: a few milliseconds of work, less than the hand-over to a worker
# thread costs (≈ 1 ms, measured against uvicorn). Otherwise it goes to the thread pool, so that
# the loop goes on reading requests and answering the ones past the bounded queue 503 at once:
# scored on the loop under 500 connections, the loop was busy 1,199 samples of 1,200 and some
# connections waited most of a minute (issue 39).
INLINE_UP_TO = 10
IDLE_WAIT = 0.005  # seconds a request may have waited for the loop and still count it idle


def _worker_idle(scope: dict) -> bool:
    """No other request in progress here, and this one was taken up at once (a request scored
    on the loop finishes before the next begins, so only the wait shows a loop that is busy)."""
    return not scope.get(OTHERS_IN_FLIGHT, 0) and waited(scope) < IDLE_WAIT


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, summary="score a batch of opportunities")
async def score(req: ScoreRequest, loaded: LoadedDep, now: NowDep, request: Request, database: DatabaseDep) -> Response:
    """Win probability, stall risk, score, grade, expected value and the top reasons of each
    opportunity, as of `as_of` (default now); with score history, the change since the last
    recorded score and why. Nothing sent is stored unless the operator switched on
    `[serving] record_scores`."""
    # the batch limit was checked before the body was validated (serving.deps.KeyFirstRoute);
    # the database is waited for on its own threads, never on the event loop
    inline = len(req.opportunities) <= INLINE_UP_TO and _worker_idle(request.scope)  # before the history's wait, which is not the loop's
    as_of = to_utc(req.as_of) if req.as_of is not None else now
    history = database.history()
    previous = await database.aoptional("reading the previous scores", history.previous, [o.opportunity_id for o in req.opportunities], as_of) if history else None
    if inline:
        answer, scores = _answer(req, loaded, now, as_of, previous)
    else:
        answer, scores = await run_in_threadpool(_answer, req, loaded, now, as_of, previous)
    request.app.state.scores_served.inc(sum(s["status"] == "open" for s in scores))
    if history is not None and previous is not None and request.app.state.settings.serving.record_scores:
        opened = pd.DataFrame([{**s, "as_of": as_of} for s in scores if s["status"] == "open"])
        try:
            await database.arun(f"recording {len(opened)} scores", history.record, opened, now, loaded.version, "api", RunFacts.of(loaded.bundle), writes=True)
        except DatabaseUnavailable as exc:  # the scores are answered all the same; the history misses this run
            log.warning("%s", exc)
    return answer


def _answer(req: ScoreRequest, loaded: Loaded, now: pd.Timestamp, as_of: pd.Timestamp, previous: pd.DataFrame | None) -> tuple[Response, list[dict]]:
    bundle = loaded.bundle
    validated = records_to_tables(req.records(), bundle.spec.stages.config, now=max(now, as_of), typed=True)
    scores = score_ids(bundle, validated.tables, [o.opportunity_id for o in req.opportunities], as_of, previous)
    shown = [{k: v for k, v in s.items() if k != "factors"} for s in scores]
    answer = ScoreResponse.model_validate({"model_version": loaded.version, "model_source": loaded.source, "as_of": as_of.to_pydatetime(), "scores": shown})
    # checked against the schema once here; a Response is sent as it is, not validated again by FastAPI
    return Response(answer.model_dump_json(), media_type="application/json"), scores
