"""The managers' view of their own pipeline, when the service is started with `--data DIR`.

The CRM's POST /v1/score stores nothing; this is the other way in: an export folder on the
server, read when asked and scored with the current champion, cached per model version and
file modification time so a page refresh does not rescore everything. The change since the
last run comes from score history (what `oppscore score` recorded before this export ended).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import HTTPException, Query, Request

from analytics import report
from analytics.forecast import backtest, backtest_summary, forecast, in_order, methods_for, verdict
from analytics.funnel import funnel
from analytics.stage_weights import StageWeights
from features.contract import load_export
from features.frame import segment_columns, stage_state
from features.settings import Settings
from scoring.history import ScoreHistory
from scoring.score import score_open
from serving.deps import LoadedDep, NowDep, SettingsDep, v1_router
from serving.routes.score import history_of, previous_scores
from serving.schemas import ErrorBody

router = v1_router("pipeline")
_lock = threading.Lock()
STALL_ALERT = 0.6  # a deal is flagged stalled from this stall risk on
DEAL_COLUMNS = [
    "opportunity_id", "account_id", "owner_id", "team", "stage", "days_in_stage", "expected_close_date", "amount", "win_probability",
    "score", "grade", "expected_value", "stall_risk", "stalled", "previous_score", "score_change", "why_changed", "top_factors",
]


@dataclass
class View:
    key: tuple
    as_of: pd.Timestamp
    deals: pd.DataFrame
    validated: Any
    panels: dict = field(default_factory=dict)
    positions: dict | None = None  # opportunity id → its row in deals, made on the first lookup by id
    statuses: dict | None = None  # opportunity id → its status at as_of (open, won, lost, …), made with positions


def _export_stamp(folder: Path) -> float:
    return max((f.stat().st_mtime for f in folder.iterdir() if f.is_file()), default=0.0)


def _deals(app, loaded, validated, history: ScoreHistory | None) -> pd.DataFrame:
    tables = validated.tables
    as_of = tables.end
    ids = tables.opportunities["opportunity_id"].to_numpy()
    previous = previous_scores(app, history, ids, as_of)
    scored = score_open(loaded.bundle, tables, as_of, previous=previous)
    if scored.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DEAL_COLUMNS})
    if previous is None:
        scored["previous_score"], scored["score_change"], scored["why_changed"] = np.nan, np.nan, None
    opps = tables.opportunities.set_index("opportunity_id")
    for col in ("account_id", "owner_id", "team", "amount", "expected_close_date"):
        scored[col] = scored["opportunity_id"].map(opps[col]).to_numpy()
    state = stage_state(tables, loaded.bundle.spec.stages, scored[["opportunity_id", "as_of"]])
    scored["days_in_stage"] = ((scored["as_of"] - state["entered_at"]).dt.total_seconds() / 86400).round(1).to_numpy()
    scored["stalled"] = scored["stall_risk"] >= STALL_ALERT
    scored["expected_close_date"] = pd.to_datetime(scored["expected_close_date"], utc=True).dt.strftime("%Y-%m-%d")
    return scored[DEAL_COLUMNS]


def view(request: Request, loaded, settings: Settings, now: pd.Timestamp) -> View:
    folder: Path | None = request.app.state.data
    if folder is None:
        raise HTTPException(404, detail="this service was started without --data: no pipeline to show (the CRM scores its own deals with POST /v1/score)")
    key = (loaded.version, loaded.source, _export_stamp(folder))
    with _lock:
        cached: View | None = getattr(request.app.state, "pipeline_view", None)
        if cached is None or cached.key != key:
            validated = load_export(folder, settings, now)
            cached = View(key, validated.tables.end, _deals(request.app, loaded, validated, history_of(request.app)), validated)
            request.app.state.pipeline_view = cached
    return cached


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN and NaT as null."""
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in out:
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                row[k] = None
            elif isinstance(v, (np.bool_,)):
                row[k] = bool(v)
            elif isinstance(v, pd.Timestamp):
                row[k] = v.isoformat()
    return out


@router.get("/pipeline", summary="open deals of the served export, ranked by score, with reasons, change since the last run and stall alerts",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
def pipeline(request: Request, loaded: LoadedDep, settings: SettingsDep, now: NowDep, limit: int = Query(default=10_000, ge=1, le=100_000)) -> dict[str, Any]:
    v = view(request, loaded, settings, now)
    deals = v.deals
    alerts = deals[deals["stalled"]].sort_values("stall_risk", ascending=False)
    return {
        "model_version": loaded.version,
        "as_of": v.as_of.isoformat(),
        "open": len(deals),
        "shown": min(limit, len(deals)),
        "stalled": len(alerts),
        "with_history": bool(deals["previous_score"].notna().any()),
        "expected_value": float(deals["expected_value"].sum()),
        "pipeline_amount": float(deals["amount"].sum()),
        "stall_alert_from": STALL_ALERT,
        "deals": records(deals.head(limit)),
        "stall_alerts": records(alerts.head(limit)),
    }


def _panels(v: View, loaded, settings: Settings) -> dict:
    tables, stages = v.validated.tables, v.validated.stages
    f = funnel(tables, stages, v.as_of, segment_columns(settings, tables))
    sw = StageWeights(segment_columns(settings, tables)).fit(tables, stages, v.as_of)
    month = pd.Period(v.as_of.tz_localize(None), freq="M")
    methods = methods_for(stages, loaded.bundle)
    bt = backtest(tables, stages, methods, periods=4)
    summary = backtest_summary(bt) if len(bt) else pd.DataFrame()
    periods = {}
    for name, p in (("this period", month), ("next period", month + 1)):
        start, end = pd.Timestamp(p.start_time, tz="UTC"), pd.Timestamp((p + 1).start_time, tz="UTC")
        done = in_order(forecast(tables, stages, (max(start, v.as_of), end), methods, as_of=v.as_of).methods, summary)  # the best on the backtest first
        periods[name] = {"period": str(p), "methods": records(done), "chart": report.forecast_plot(done, f"{name}: {p}", uri=True)}
    return {
        "as_of": v.as_of.isoformat(),
        "funnel": {"conversion": records(f.conversion), "dwell": records(f.dwell),
                   "chart": report.funnel_plot(f.conversion, uri=True), "dwell_chart": report.dwell_quantiles_plot(f.dwell, uri=True)},
        "stage_weights": {"rows": records(sw.weights_), "chart": report.stage_weights_plot(sw.weights_, uri=True)},
        "forecast": {**periods, "backtest": {"summary": records(summary), "said": verdict(summary), "chart": report.backtest_plot(bt, uri=True) if len(bt) else None}},
    }


@router.get("/pipeline/panels", summary="the managers' panels for the served export: funnel, dwell, stage weights against the configured ones, forecast with its backtest",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
def panels(request: Request, loaded: LoadedDep, settings: SettingsDep, now: NowDep) -> dict[str, Any]:
    v = view(request, loaded, settings, now)
    with _lock:
        if not v.panels:
            v.panels = _panels(v, loaded, settings)
    return v.panels
