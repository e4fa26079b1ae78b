"""Dependencies injected into routes: the settings, the bundle being served, the API key check;
and the `/v1` router, whose routes check the key before the body is read.

All are `async`: none of them blocks, and FastAPI would run a plain function in its thread
pool, a hand-over that costs more than the work itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from features.settings import Settings
from features.times import utc_now
from scoring.store import Loaded
from serving.holder import ModelHolder
from serving.state import ServiceDatabase
from serving.views import ServedExport

bearer = HTTPBearer(auto_error=False, description="an API key from OPPSCORE_API_KEYS")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_database(request: Request) -> ServiceDatabase:
    return request.app.state.database


async def get_export(request: Request) -> ServedExport:
    return request.app.state.export


MISSING_KEY = "missing or invalid API key: send Authorization: Bearer <key>"


def has_key(authorization: str, keys: list[str]) -> bool:
    """Whether an Authorization header carries one of the keys. Every key is compared in
    constant time, and all of them, so timing tells nothing."""
    scheme, _, given = authorization.partition(" ")
    ok = False
    for key in keys:
        ok |= secrets.compare_digest(given.strip().encode(), key.encode())
    return scheme.lower() == "bearer" and bool(given.strip()) and ok


def check_key(request: Request) -> None:
    """401 unless the request carries one of the keys."""
    if not has_key(request.headers.get("authorization", ""), request.app.state.api_keys):
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=MISSING_KEY, headers={"WWW-Authenticate": "Bearer"})


async def require_key(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """The key check as a dependency, so the OpenAPI page shows the scheme; `KeyFirstRoute`
    has already run it before the body was read."""
    check_key(request)


class KeyFirstRoute(APIRoute):
    """A route that checks the API key before FastAPI reads and parses the body: a caller
    without a key gets 401 whatever it sent, and costs no parsing (FastAPI decodes the JSON
    before it solves dependencies, so a dependency alone would answer 422 first)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            check_key(request)
            if request.method == "POST":
                await _count_first(request)
            return await handler(request)

        return key_first


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def _count_first(request: Request) -> None:
    """Parse the body once (FastAPI reuses the parse) and refuse, before validating a single
    item: NaN and Infinity literals (not JSON), and batches over the limit (413), so a huge
    invalid batch costs a parse, not a validation and a 422 as large as itself."""
    body = await request.body()
    try:
        parsed = json.loads(body, parse_constant=_no_constant) if body else None
    except RecursionError:
        raise RequestValidationError([{"loc": ["body"], "msg": "JSON nested too deep to read: an opportunity is an object of fields, lists one level down", "type": "json_invalid"}]) from None
    except ValueError as exc:  # not UTF-8, an integer of thousands of digits, a NaN, malformed
        said = f"{exc}: send numbers as numbers and missing values as null" if "is not JSON" in str(exc) else f"not JSON that can be read: {str(exc)[:200]}"
        raise RequestValidationError([{"loc": ["body"], "msg": said, "type": "json_invalid"}]) from None
    request._json = parsed  # read by FastAPI instead of parsing again
    serving = request.app.state.settings.serving
    for name, limit in (("opportunities", serving.max_batch), ("events", serving.max_events)):
        items = parsed.get(name) if isinstance(parsed, dict) else None
        if isinstance(items, list) and len(items) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=f"{len(items)} {name} in one batch; at most {limit}")


def v1_router(tag: str) -> APIRouter:
    """A router under /v1 whose every route needs the API key, checked first."""
    return APIRouter(prefix="/v1", tags=[tag], route_class=KeyFirstRoute, dependencies=[Depends(require_key)])


async def get_loaded(holder: Annotated[ModelHolder, Depends(get_holder)]) -> Loaded:
    loaded = holder.current  # taken once: a reload during this request does not affect it
    if loaded is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no model is loaded yet: train one with `oppscore train` (GET /readyz says more)")
    return loaded


async def request_time() -> pd.Timestamp:
    """'Now' for this request: read once, passed to everything the request computes."""
    return utc_now()


SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[pd.Timestamp, Depends(request_time)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
LoadedDep = Annotated[Loaded, Depends(get_loaded)]
DatabaseDep = Annotated[ServiceDatabase, Depends(get_database)]
ExportDep = Annotated[ServedExport, Depends(get_export)]


async def get_loaded_if_any(holder: Annotated[ModelHolder, Depends(get_holder)]) -> Loaded | None:
    return holder.current


MaybeLoadedDep = Annotated[Loaded | None, Depends(get_loaded_if_any)]
