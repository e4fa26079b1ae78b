"""The managers' view of their own pipeline, when the service is started with `--data DIR`.

The CRM's POST /v1/score stores nothing; this is the other way in: an export folder on the
server, scored with the current champion (`serving.views`: cached per model version and file
modification time, so a page refresh does not rescore everything). The change since the last
run comes from score history (what `oppscore score` recorded before this export ended).
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from fastapi import Query

from analytics import report
from analytics.forecast import backtest, backtest_summary, forecast, methods_for
from analytics.forecast_record import ReplayedRecord, ordered
from analytics.funnel import funnel
from analytics.stage_weights import StageWeights
from features.frame import segment_columns
from features.settings import Settings
from scoring.database import DatabaseUnavailable
from serving.deps import DatabaseDep, ExportDep, LoadedDep, NowDep, SettingsDep, v1_router
from serving.schemas import ErrorBody
from serving.views import View, records

router = v1_router("pipeline")
_lock = threading.Lock()


@router.get("/pipeline", summary="open deals of the served export, ranked by score, with reasons, change since the last run and stall alerts",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
def pipeline(export: ExportDep, loaded: LoadedDep, now: NowDep, settings: SettingsDep, limit: int = Query(default=10_000, ge=1, le=100_000)) -> dict[str, Any]:
    v = export.view(loaded, now)
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
        "stall_alert_from": v.alert.threshold,  # the lowest stall risk flagged (null: none)
        "stall_alert_precision": settings.stall.alert_precision,  # the share of flagged deals expected to stall, at least ([stall] alert_precision)
        "stall_alert_expected": v.alert.expected_precision,  # the flagged deals' mean stall risk
        "stall_alert_max_share": settings.stall.alert_max_share,
        "stall_horizon_days": settings.stall.horizon_days,
        "deals": records(deals.head(limit)),
        "stall_alerts": records(alerts.head(limit)),
    }


def _recorded_forecasts(database) -> pd.DataFrame:
    """The score history's forecasts, or none when there is no history or it does not answer
    (the panels go on by the forecast's own backtest)."""
    handles = database.handles()
    if handles is None:
        return pd.DataFrame()
    try:
        return database.run("reading the forecasts", handles.history.forecasts)
    except DatabaseUnavailable:
        return pd.DataFrame()


def _panels(v: View, loaded, settings: Settings, recorded: pd.DataFrame) -> dict:
    """`recorded`: the score history's forecasts (the replayed ones order the forecast's methods)."""
    tables, stages = v.validated.tables, v.validated.stages
    f = funnel(tables, stages, v.as_of, segment_columns(settings, tables))
    sw = StageWeights(segment_columns(settings, tables)).fit(tables, stages, v.as_of)
    month = pd.Period(v.as_of.tz_localize(None), freq="M")
    methods = methods_for(stages, loaded.bundle)
    bt = backtest(tables, stages, methods, periods=4)
    summary = backtest_summary(bt) if len(bt) else pd.DataFrame()
    replayed = ReplayedRecord.of(recorded, tables, stages, v.as_of)
    periods, judged = {}, []
    for name, p in (("this period", month), ("next period", month + 1)):
        start, end = pd.Timestamp(p.start_time, tz="UTC"), pd.Timestamp((p + 1).start_time, tz="UTC")
        window = (max(start, v.as_of), end)
        made = forecast(tables, stages, window, methods, as_of=v.as_of)
        judged.append(ordered(made.methods, window, summary, replayed, made.level))  # as `oppscore forecast` orders and says it
        done = judged[-1].methods
        periods[name] = {"period": str(p), "methods": records(done), "chart": report.forecast_plot(done, f"{name}: {p}", uri=True)}
    said = judged[0].best + [f"{name}: {line}" for name, j in zip(("this period", "next period"), judged, strict=True) for line in j.moved] + judged[0].backtest + list(judged[0].range)
    return {
        "as_of": v.as_of.isoformat(),
        "funnel": {"conversion": records(f.conversion), "dwell": records(f.dwell),
                   "chart": report.funnel_plot(f.conversion, uri=True), "dwell_chart": report.dwell_quantiles_plot(f.dwell, uri=True)},
        "stage_weights": {"rows": records(sw.weights_), "chart": report.stage_weights_plot(sw.weights_, uri=True)},
        "forecast": {**periods, "backtest": {"summary": records(summary), "said": said, "chart": report.backtest_plot(bt, uri=True) if len(bt) else None}},
    }


@router.get("/pipeline/panels", summary="the managers' panels for the served export: funnel, dwell, stage weights against the configured ones, forecast with its backtest",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
def panels(export: ExportDep, loaded: LoadedDep, settings: SettingsDep, now: NowDep, database: DatabaseDep) -> dict[str, Any]:
    v = export.view(loaded, now)
    with _lock:
        if not v.panels:
            v.panels = _panels(v, loaded, settings, _recorded_forecasts(database))
    return v.panels
