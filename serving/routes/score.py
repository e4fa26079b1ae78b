"""POST /v1/score: the CRM's call. The route converts and delegates; the scoring is features'."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Request, status

from features.frame import stage_state
from features.payload import records_to_tables
from features.scoring import score_points
from features.settings import StageConfig
from features.tables import to_utc
from serving.deps import ApiKeyDep, LoadedDep, SettingsDep
from serving.schemas import ErrorBody, Score, ScoreRequest, ScoreResponse

router = APIRouter(prefix="/v1", tags=["scores"])

ERRORS = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"},
    413: {"model": ErrorBody, "description": "batch or body too large"},
    422: {"model": ErrorBody, "description": "malformed request: every problem, each with its field path"},
    503: {"model": ErrorBody, "description": "no model loaded"},
}


@router.post("/score", response_model=ScoreResponse, responses=ERRORS, summary="score a batch of opportunities")
def score(req: ScoreRequest, loaded: LoadedDep, _: ApiKeyDep, settings: SettingsDep, request: Request) -> ScoreResponse:
    """Win probability, stall risk, score, grade, expected value and the top reasons of each
    opportunity, as of `as_of` (default now). Nothing sent is stored."""
    if len(req.opportunities) > settings.serving.max_batch:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, detail=f"{len(req.opportunities)} opportunities in one batch; at most {settings.serving.max_batch}")
    bundle = loaded.bundle
    as_of = to_utc(req.as_of)
    now = max(pd.Timestamp.now(tz="UTC"), as_of)
    validated = records_to_tables(req.records(), StageConfig(**bundle.spec.stage_config), now=now, typed=True)
    tables = validated.tables
    ids = [o.opportunity_id for o in req.opportunities]
    points = pd.DataFrame({"opportunity_id": ids, "as_of": pd.Series([as_of] * len(ids))})
    state = stage_state(tables, bundle.spec.stages, points)
    created = points["opportunity_id"].map(tables.opportunities.set_index("opportunity_id")["created_at"])
    index = state["index_now"].to_numpy()
    open_now = state["is_open"].to_numpy() & (created <= as_of).to_numpy()
    scored = score_points(bundle, tables, points[open_now]).set_index("opportunity_id") if open_now.any() else None
    words = np.where(created > as_of, "not yet created", np.where(index == bundle.spec.stages.won_index, "won", "lost"))
    out = []
    for i, opp_id in enumerate(ids):
        if open_now[i]:
            row = scored.loc[opp_id]
            out.append(
                Score(
                    opportunity_id=opp_id, status="open", stage=row["stage"], win_probability=float(row["win_probability"]),
                    stall_risk=float(row["stall_risk"]), score=int(row["score"]), grade=row["grade"],
                    expected_value=float(row["expected_value"]), top_factors=row["top_factors"],
                )
            )
        else:
            out.append(Score(opportunity_id=opp_id, status=str(words[i])))
    request.app.state.scores_served.inc(int(open_now.sum()))
    return ScoreResponse(model_version=loaded.version, model_source=loaded.source, as_of=as_of.to_pydatetime(), scores=out)
