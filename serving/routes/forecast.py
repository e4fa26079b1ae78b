"""POST /v1/forecast: the won amount a pipeline should bring in a period, with its range, by
the configured weights, the data-driven weights and the model (all learned at training time:
the request carries only the open deals, and nothing sent is stored)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from analytics.forecast import PERIOD_PATTERN, PERIODS_SAID, TimeToWin, forecast, methods_for, parse_period
from features.payload import records_to_tables
from features.times import to_utc
from scoring.database import DatabaseUnavailable
from serving.deps import DatabaseDep, LoadedDep, NowDep, v1_router
from serving.schemas import ERRORS, EXAMPLE_OPPORTUNITY, Opportunity, Timestamp

router = v1_router("forecast")
log = logging.getLogger(__name__)


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"period": "2026-10", "as_of": "2026-09-30T00:00:00Z", "opportunities": [EXAMPLE_OPPORTUNITY]}]})
    period: str = Field(pattern=PERIOD_PATTERN, description=PERIODS_SAID)
    as_of: Timestamp | None = None
    opportunities: list[Opportunity] = Field(min_length=1, description="the open pipeline")


class MethodRange(BaseModel):
    method: str
    expected: float
    p10: float
    p50: float
    p90: float


class ForecastResponse(BaseModel):
    model_version: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    open_deals: int
    pipeline_amount: float
    methods: list[MethodRange]


@router.post("/forecast", response_model=ForecastResponse, responses=ERRORS, summary="expected won amount in a period, with P10–P90, by three methods")
def post_forecast(req: ForecastRequest, loaded: LoadedDep, now: NowDep, request: Request, database: DatabaseDep) -> Any:
    """With `[serving] record_scores` on, the forecast is kept in the score history for its
    track record (`GET /v1/monitor`, `oppscore monitor`)."""
    bundle = loaded.bundle
    as_of = to_utc(req.as_of) if req.as_of is not None else now
    try:
        window = parse_period(req.period, as_of)
    except ValueError as exc:
        raise HTTPException(422, detail=[{"loc": ["body", "period"], "msg": str(exc), "type": "value_error"}]) from None
    if window[1] <= as_of:
        raise HTTPException(422, detail=[{"loc": ["body", "period"], "msg": f"the period ends {window[1]:%Y-%m-%d}, before as_of ({as_of:%Y-%m-%d}): nothing of it is left to forecast",
                                          "type": "contract"}])
    records = [o.model_dump() for o in req.opportunities]
    validated = records_to_tables(records, bundle.spec.stages.config, now=max(now, as_of), typed=True)
    timing = TimeToWin.from_frame(bundle.timing) if bundle.timing is not None else None
    f = forecast(validated.tables, bundle.spec.stages, window, methods_for(bundle.spec.stages, bundle, learned_weights=True), as_of=as_of, timing=timing)
    history = database.history(wait=True) if request.app.state.settings.serving.record_scores else None
    if history is not None:
        try:
            database.run("recording the forecast", history.record_forecast, f.methods, now, f.as_of, f.period, f.open_deals, loaded.version, "api", writes=True)
        except DatabaseUnavailable as exc:  # the forecast is answered all the same
            log.warning("%s", exc)
    return ForecastResponse(
        model_version=loaded.version, period_start=window[0].to_pydatetime(), period_end=window[1].to_pydatetime(), as_of=as_of.to_pydatetime(),
        open_deals=f.open_deals, pipeline_amount=f.pipeline_amount, methods=[MethodRange(**r) for r in f.methods.to_dict("records")],
    )
