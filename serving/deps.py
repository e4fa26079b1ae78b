"""Dependencies injected into routes: the settings, the bundle being served, the API key check.

All are `async`: none of them blocks, and FastAPI would run a plain function in its thread
pool, a hand-over that costs more than the work itself.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from features.model_store import Loaded
from features.settings import Settings
from serving.holder import ModelHolder

bearer = HTTPBearer(auto_error=False, description="an API key from OPPSCORE_API_KEYS")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def require_key(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Every key is compared in constant time, and all of them, so timing tells nothing."""
    keys: list[str] = request.app.state.api_keys
    given = credentials.credentials if credentials is not None else ""
    ok = False
    for key in keys:
        ok |= secrets.compare_digest(given.encode(), key.encode())
    if credentials is None or not ok:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def get_loaded(holder: Annotated[ModelHolder, Depends(get_holder)]) -> Loaded:
    loaded = holder.current  # taken once: a reload during this request does not affect it
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"no model is loaded: {holder.status.message}. Train one with `oppscore train`.")
    return loaded


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ApiKeyDep = Annotated[None, Depends(require_key)]
LoadedDep = Annotated[Loaded, Depends(get_loaded)]
