"""The FastAPI application: routes, error contract, limits, metrics and the model holder.

Errors never carry a stack trace or a path: a malformed request is 422 with field paths, an
oversized one 413, an unknown key 401; anything unexpected is logged here and answered with a
plain 500 that names nothing internal.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from features.contract import ExportInvalid
from features.settings import Settings
from scoring.database import DatabaseUnavailable
from serving.deps import MISSING_KEY, has_key
from serving.holder import ModelHolder
from serving.protocol import OTHERS_IN_FLIGHT, waited
from serving.routes import forecast, health, model, monitor, opportunities, pipeline, score
from serving.state import ServiceDatabase
from serving.views import ServedExport

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
DATATABLES = Path(find_spec("itables").origin).parent / "html"  # located, not imported: the page needs its files only
_PATH = re.compile(r"([A-Za-z_]+)\[(\d+)\]")


def _loc(location: str | None, column: str | None) -> list[str | int]:
    """'opportunities[3].stage_history[1]' + 'stage' → ['body', 'opportunities', 3, 'stage_history', 1, 'stage']."""
    loc: list[str | int] = ["body"]
    for part in (location or "").split("."):
        m = _PATH.fullmatch(part)
        if m:
            loc += [m.group(1), int(m.group(2))]
        elif part:
            loc.append(part)
    if column:
        loc.append(column)
    return loc


def _with_input(error: dict) -> str:
    """The message, and what was found when it is a short scalar ("expected …; found '0'")."""
    found = error.get("input")
    if isinstance(found, str | int | float) and not isinstance(found, bool) and len(repr(found)) <= 80 and error.get("type") != "missing":
        return f"{error.get('msg', '')}; found {found!r}"
    return str(error.get("msg", ""))


SHOWN_PROBLEMS = 100  # a 422 names at most this many problems, and says how many there were


def _unprocessable(problems: list[dict], total: int) -> JSONResponse:
    body: dict = {"detail": problems}
    if total > len(problems):
        body["problems_total"] = total
        body["note"] = f"the first {len(problems)} of {total} problems; fix these and send again"
    return JSONResponse(body, status_code=422)


class BodyLimit:
    """Answers 413 when a body is larger than the limit, before it is parsed or held whole."""

    def __init__(self, app, limit: int, keys: list[str]) -> None:
        self.app = app
        self.limit = limit
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if scope.get("path", "").startswith("/v1") and not has_key(headers.get(b"authorization", b"").decode("latin-1"), self.keys):
                # the key is answered first, whatever the body: a stranger learns nothing of the limits
                await JSONResponse({"detail": MISSING_KEY}, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
            await JSONResponse({"detail": f"request body of {int(length)} bytes; at most {self.limit}"}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, detail=f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


class PagePolicy:
    """A Content-Security-Policy on the HTML pages (the managers' page, /docs, /redoc): nothing
    from another origin is fetched or run, so a page behaves the same inside a closed network
    (ReDoc's footer logo, from its CDN, is not even asked for) and an injected script cannot call
    out. The JSON routes are untouched (pages only: no cost on /v1)."""

    PAGES = ("/", "/docs", "/redoc")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"content-security-policy", PAGE_POLICY.encode())]}
            await send(message)

        await self.app(scope, receive, with_policy)


class InFlight:
    """A bounded queue: past `limit` requests in progress in this worker, or once a request has
    waited `wait` seconds for the event loop after it arrived (a worker busy with hundreds of
    connections), the request is answered 503 with Retry-After at once, instead of waiting
    behind the others until p99 grows without bound and clients give up (or the kernel resets
    their connections). Health and metrics are never refused: an orchestrator must see a busy
    worker as alive."""

    OPEN = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app, limit: int, wait: float) -> None:
        self.app = app
        self.limit = limit
        self.wait = wait
        self.now = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.OPEN:
            await self.app(scope, receive, send)
            return
        late = waited(scope)
        if self.now >= self.limit or late > self.wait:
            said = f"{self.now} requests in progress (at most {self.limit})" if self.now >= self.limit else f"this request waited {late:.1f} s for the worker (at most {self.wait:.1f})"
            await JSONResponse({"detail": f"this worker is busy: {said}; send again shortly", "cause": "overloaded"},
                               status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
            return
        scope[OTHERS_IN_FLIGHT] = self.now
        self.now += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


def create_app(settings: Settings, holder: ModelHolder | None = None, data: Path | None = None, start_reloader: bool = True) -> FastAPI:
    holder = holder or ModelHolder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database.start()  # opened and brought up to date in the background, once
        if start_reloader:
            # loading (a registry that accepts but never answers can take its full timeout) runs
            # in the reloader's thread: /healthz is up from the first second, /readyz says when
            # a model is in
            holder.start()
        elif holder.current is None:
            holder.load()
        # the loaded libraries live as long as the process: keep them out of the garbage
        # collector's full passes, which otherwise pause a request now and then
        gc.freeze()
        yield
        holder.stop()
        app.state.database.close()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            multiprocess.mark_process_dead(os.getpid())  # this worker's live gauges leave the scrape

    app = FastAPIOffline(  # Swagger UI and ReDoc from the package: /docs works inside a company network
        static_url="/assets/docs",
        title="oppscore",
        version="1",
        summary="Win probability, stall risk and their reasons for open CRM opportunities; data-driven stage weights.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.data = data
    app.state.database = ServiceDatabase(settings)
    app.state.export = ServedExport(data, settings, app.state.database)
    app.state.live_scores = OrderedDict()  # GET /v1/opportunities/{id}'s answers, most recently used last
    app.state.api_keys = [k.get_secret_value() if isinstance(k, SecretStr) else str(k) for k in settings.api_keys]
    _metrics(app, holder)
    _error_handlers(app)
    _routes(app)
    _openapi_with_stages(app, holder)
    app.add_middleware(BodyLimit, limit=settings.serving.max_body_bytes, keys=app.state.api_keys)
    app.add_middleware(PagePolicy)
    app.add_middleware(InFlight, limit=settings.serving.max_in_flight, wait=settings.serving.queue_seconds)
    return app


def _metrics(app: FastAPI, holder: ModelHolder) -> None:
    """Prometheus at /metrics: requests (the instrumentator), scores served, the model loaded,
    the track record's figures. Under `serve --workers N` every worker writes its figures to
    PROMETHEUS_MULTIPROC_DIR and a scrape reads them all (prometheus_client's multiprocess
    mode): one consistent view, whichever worker answers."""
    registry = CollectorRegistry()
    app.state.scores_served = Counter("oppscore_scores_served", "opportunities scored", registry=registry)
    served = Gauge("oppscore_model_info", "the model being served (1 = loaded) by any worker", ["version", "source"], registry=registry, multiprocess_mode="livemax")
    app.state.track_gauges = {
        name: Gauge(f"oppscore_{name}", says, registry=registry, multiprocess_mode="livemostrecent")
        for name, says in (("realised_log_loss", "realised log loss of the champion's resolved scores in the verdict's window"),
                           ("largest_psi", "the largest feature PSI against the training reference at the latest scoring run"))
    }
    for gauge in app.state.track_gauges.values():
        gauge.set(float("nan"))  # not known until GET /v1/monitor computes it
    shown: list[tuple[str, str]] = []

    def show(loaded) -> None:
        for labels in shown:
            served.labels(*labels).set(0)
        shown.clear()
        if loaded is not None:
            served.labels(loaded.version, loaded.source).set(1)
            shown.append((loaded.version, loaded.source))

    holder.on_change = show
    show(holder.current)
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False, tags=["health"])


def _openapi_with_stages(app: FastAPI, holder: ModelHolder) -> None:
    """The OpenAPI document names the stages the served model knows (an enum on every stage
    field), so that what the schema allows is what the service accepts; made again when
    another version is served."""
    made = app.openapi
    shown: list = [object()]

    def openapi() -> dict:
        loaded = holder.current
        key = (loaded.version, loaded.source) if loaded is not None else None
        if shown[0] != key or app.openapi_schema is None:
            app.openapi_schema = None
            document = made()
            if loaded is not None:
                names = [*loaded.bundle.spec.stages.config.open, loaded.bundle.spec.stages.config.won, loaded.bundle.spec.stages.config.lost]
                for name in ("StageEntry", "StageRow"):
                    field = document.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {}).get("stage")
                    if field is not None:
                        field["enum"] = names
            app.openapi_schema, shown[0] = document, key
        return app.openapi_schema

    app.openapi = openapi


def _error_handlers(app: FastAPI) -> None:
    """Every failure a JSON answer: 422 naming the fields, the HTTP errors as raised, a client
    gone a log line, anything else a logged 500 that says nothing of the inside."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = [{"loc": list(e.get("loc", [])), "msg": _with_input(e), "type": str(e.get("type", "value_error"))} for e in errors[:SHOWN_PROBLEMS]]
        return _unprocessable(problems, len(errors))

    @app.exception_handler(ExportInvalid)
    async def contract(request: Request, exc: ExportInvalid) -> JSONResponse:
        problems = [{"loc": _loc(p.location, p.column), "msg": f"found {p.found}, expected {p.expected}", "type": "contract"} for p in exc.problems[:SHOWN_PROBLEMS]]
        return _unprocessable(problems, len(exc.problems))

    @app.exception_handler(DatabaseUnavailable)
    async def database(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        writes = request.method in ("POST", "DELETE")
        body = {"detail": str(exc), "cause": exc.cause}
        if writes:
            body["stored"] = "maybe" if exc.maybe_stored else "no"
            body["resend"] = "sending the same request again is safe: an event is stored once per id" if request.url.path.startswith("/v1/events") else "sending it again is safe"
        log.warning("%s %s: 503 (%s)", request.method, request.url.path, exc)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(request.app.state.database.retry_after())})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        # the client left before its request arrived: nobody to answer, nothing broken here
        log.info("%s %s: the client disconnected before its request arrived", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)


def _routes(app: FastAPI) -> None:
    """The API's routers, the managers' page and its grid's assets."""
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(model.router)
    app.include_router(pipeline.router)
    app.include_router(forecast.router)
    app.include_router(monitor.router)
    app.include_router(opportunities.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/assets/datatables.{kind}", include_in_schema=False)
    def datatables(kind: str) -> FileResponse:
        """DataTables with its Buttons and SearchPanes extensions, as the itables package ships
        it (one ES module and its CSS): the page's grid, from the package, never a CDN."""
        if kind not in ("js", "css"):
            raise HTTPException(404, detail="no such asset")
        return FileResponse(DATATABLES / f"dt_bundle.{kind}", media_type="text/javascript" if kind == "js" else "text/css")
