"""The managers' view of their own pipeline, when the service is started with `--data DIR`.

The CRM's POST /v1/score stores nothing; this is the other way in: an export folder on the
server, read when asked and scored with the current champion, cached per model version and
file modification time so a page refresh does not rescore everything.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import HTTPException, Query, Request

from features.contract import load_export
from scoring.score import score_open
from serving.deps import LoadedDep, NowDep, SettingsDep, v1_router
from serving.schemas import ErrorBody

router = v1_router("pipeline")
_lock = threading.Lock()


def _export_stamp(folder: Path) -> float:
    return max((f.stat().st_mtime for f in folder.iterdir() if f.is_file()), default=0.0)


def pipeline_frame(request: Request, loaded, settings, now: pd.Timestamp) -> tuple[pd.DataFrame, Any]:
    folder: Path | None = request.app.state.data
    if folder is None:
        raise HTTPException(404, detail="this service was started without --data: no pipeline to show (the CRM scores its own deals with POST /v1/score)")
    key = (loaded.version, loaded.source, _export_stamp(folder))
    with _lock:
        cache = getattr(request.app.state, "pipeline_cache", None)
        if cache is None or cache[0] != key:
            validated = load_export(folder, settings, now)
            scored = score_open(loaded.bundle, validated.tables, validated.tables.end)
            cache = (key, scored, validated)
            request.app.state.pipeline_cache = cache
    return cache[1], cache[2]


@router.get("/pipeline", summary="open deals of the served export, ranked by score, with reasons and stall alerts", responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
def pipeline(request: Request, loaded: LoadedDep, settings: SettingsDep, now: NowDep, limit: int = Query(default=200, ge=1, le=10_000)) -> dict[str, Any]:
    scored, validated = pipeline_frame(request, loaded, settings, now)
    top = scored.head(limit).copy()
    top["as_of"] = top["as_of"].astype(str)
    alerts = scored[scored["stall_risk"] >= 0.6].sort_values("stall_risk", ascending=False).head(limit).copy()
    alerts["as_of"] = alerts["as_of"].astype(str)
    return {
        "model_version": loaded.version,
        "as_of": str(validated.tables.end),
        "open": len(scored),
        "expected_value": float(scored["expected_value"].sum()),
        "deals": top.to_dict("records"),
        "stall_alerts": alerts.to_dict("records"),
    }
