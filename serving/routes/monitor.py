"""The track record (`GET /v1/monitor`): how the recorded scores and forecasts did, judged
against the export the service serves (`serve --data`), what drifted and the verdict; the same
figures as `oppscore monitor`, with the plots the managers' page shows.

Computed when asked and kept until the export, the champion or the score history's runs
change; the history is read on the database's own threads with a deadline (serving.state)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import HTTPException, Request

from analytics import report
from analytics.track_record import track_record
from features.settings import Settings
from serving.deps import DatabaseDep, ExportDep, LoadedDep, NowDep, SettingsDep, v1_router
from serving.schemas import ErrorBody, Unavailable

router = v1_router("monitor")
_lock = threading.Lock()


def _answer(record, settings: Settings) -> dict[str, Any]:
    answer = record.to_dict()
    answer["charts"] = {
        "reliability": report.reliability_plot(record.curves, uri=True),
        "realised": report.realised_plot(record.tables["month"], record.promised, uri=True) if "month" in record.tables else None,
        "drift": report.drift_plot(record.drift, settings.monitor.psi_alert, uri=True) if len(record.drift) else None,
        "replayed": report.replay_plot(record.replayed, uri=True) if len(record.replayed) else None,
    }
    return answer


@router.get("/monitor", summary="the track record: realised performance of the scores and forecasts served beside what the backtest promised, drift, and whether to retrain",
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 503: {"model": Unavailable}})
def monitor(request: Request, loaded: LoadedDep, settings: SettingsDep, now: NowDep, export: ExportDep, database: DatabaseDep) -> dict[str, Any]:
    v = export.view(loaded, now)  # 404 without --data: outcomes come from the served export
    handles = database.handles()
    if handles is None:
        raise HTTPException(503, detail="no score history to read: `oppscore score` records each run (or set [serving] record_scores); none is recorded here")
    history = handles.history
    runs, forecasts = database.run("reading the runs", history.runs), database.run("reading the forecasts", history.forecasts)  # small: what the cache is keyed on
    key = (v.key, len(runs), int(runs["id"].max()) if len(runs) else 0, len(forecasts))
    with _lock:
        cached = getattr(request.app.state, "monitor_view", None)
        if cached is None or cached[0] != key:
            scores = database.run("reading the scores", history.scores)  # every recorded score: read only when the answer is computed again
            record = track_record(runs, scores, forecasts, v.validated.tables, v.validated.stages, settings.monitor)
            cached = (key, _answer(record, settings))
            request.app.state.monitor_view = cached
            realised = record.verdict.get("realised") or {}
            gauges = request.app.state.track_gauges
            gauges["realised_log_loss"].set(realised.get("log_loss") if realised.get("log_loss") is not None else float("nan"))
            gauges["largest_psi"].set(float(record.drift["largest_psi"].iloc[-1]) if len(record.drift) else float("nan"))
    return cached[1]
