"""Liveness and readiness: open, no key, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import HolderDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="the process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="a model is loaded", responses={503: {"description": "no model to serve"}})
def readyz(holder: HolderDep) -> JSONResponse:
    status = holder.status
    if status.loaded is None:  # open to anyone: says what, not where (the log and GET /v1/model say where)
        said = "loading the champion" if status.message == "not loaded yet" else "no model to serve yet: train one with `oppscore train`; the service picks the champion up without a restart"
        return JSONResponse({"status": "not ready", "detail": said}, status_code=503)
    body = {"status": "ready", "model_version": status.loaded.version, "source": status.loaded.source}
    if status.loading:  # not a registry found wanting: one still being asked
        body["detail"] = "loading: serving the exported bundle while the model registry is asked for its champion"
    elif status.loaded.source == "export":
        body["detail"] = "model registry unreachable or without a champion: serving the exported bundle"
    return JSONResponse(body)
