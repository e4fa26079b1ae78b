"""The service and its database: serve, db, demo."""

from __future__ import annotations

import json
import shlex
import shutil
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from features.errors import InputInvalid
from features.loading import write_export
from features.settings import Settings, settings_toml
from features.times import utc_now
from oppscore.commands.base import ConfigOpt, _settings, app, load_export
from oppscore.commands.models import _train_and_register
from oppscore.console import console, out, steps


def _serve(settings: Settings, host: str, port: int, workers: int, data: Path | None) -> None:
    import os

    import uvicorn

    # MLflow retries an unreachable server with backoff for minutes by default; a service that
    # can fall back to its exported bundle should find out in seconds (an operator may override)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # the export is made to follow the registry by each worker's model holder, in the background:
    # a registry that hangs must not keep the service from listening (serving.holder)
    if not settings.api_keys:
        key, where = _api_key(settings)
        os.environ["OPPSCORE_API_KEYS"] = key
        settings = settings.model_copy(update={"api_keys": [key]})
        console.print(f"[yellow]no OPPSCORE_API_KEYS set:[/yellow] the key is [bold]{key}[/bold] ({where})")
    _say_other_champions(settings)
    if workers > 1:  # each worker builds its own app from the environment
        # one thread per worker: LightGBM's OpenMP threads in every worker would contend for the
        # same cores and spin while they wait (an operator's own OMP_NUM_THREADS is kept)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ["OPPSCORE_SERVE_CONFIG"] = str(settings.config_path or "")
        if data is not None:
            os.environ["OPPSCORE_SERVE_DATA"] = str(data)
        with _metrics_across_workers(workers):
            uvicorn.run("serving.main:app_from_environment", factory=True, host=host, port=port, workers=workers, log_level="warning", http=PROTOCOL)
        return
    from serving.app import create_app
    from serving.protocol import DeadlineProtocol

    DeadlineProtocol.seconds = settings.serving.request_seconds
    uvicorn.run(create_app(settings, data=data), host=host, port=port, log_level="warning", http=DeadlineProtocol)


def _say_other_champions(settings: Settings) -> None:
    """Started under a project with no champion while other projects have one (trained on an
    export whose config names its project, then `serve` without `--data`): name them and the
    command that serves each, rather than leave the service waiting for a model that will not come.
    Asked of a local registry only: a remote one is the service's to ask, in the background."""
    from scoring.store import champion_version, registry_file
    from training.registry import other_champions

    if registry_file(settings) is None or settings.champion_dir.exists():
        return
    try:
        if champion_version(settings) is not None:
            return
    except Exception:  # noqa: BLE001 - the service will say what it finds
        return
    others = other_champions(settings)
    if others:
        out.print(f"[yellow]no champion for {settings.model_name}[/yellow] (this project: {settings.project.name or 'none named'}); champions of other projects here:")
        for c in others:
            how = f"`oppscore serve --data {shlex.quote(c.data)}`" if c.data and Path(c.data).is_dir() else f"`oppscore serve --config DIR/oppscore.toml` (the export's config naming {c.model_name.removeprefix('oppscore-')})"
            out.print(f"  {c.model_name} v{c.version}, trained on {c.data or 'an export'}: {how}")


PROTOCOL = "serving.protocol:DeadlineProtocol"  # uvicorn's HTTP protocol, with a deadline for a request to arrive


@contextmanager
def _metrics_across_workers(workers: int):
    """Under several workers, each writes its Prometheus figures to one folder that a scrape
    reads whole (prometheus_client's multiprocess mode), made empty for this run and removed
    after it; an operator's own PROMETHEUS_MULTIPROC_DIR is used as it is."""
    import os
    import tempfile

    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="oppscore-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


class DbAction(StrEnum):
    upgrade = "upgrade"
    status = "status"


@app.command("db")
def db(action: Annotated[DbAction, typer.Argument(help="upgrade: bring the schema up to date; status: the revision it is at")] = DbAction.status, config: ConfigOpt = None) -> None:
    """The score history's and events' database (OPPSCORE_DATABASE_URL, or SQLite under the home):
    `upgrade` brings its schema to the latest revision, once, under a lock that holds across
    processes (run it before a team's services start on a shared PostgreSQL; each process also
    does it once at start). A database an older oppscore left half-migrated is repaired, or
    named with what to do."""
    from scoring.database import Database
    from scoring.history import database_of

    settings = _settings(config)
    where = settings.database_url or settings.history_url
    if action is DbAction.status and settings.database_url is None and not (settings.home / "history.db").exists():
        out.print(f"no database yet at {where}: `oppscore score`, `oppscore serve` or `oppscore db upgrade` makes it")
        return
    database = database_of(settings) if action is DbAction.upgrade else Database(settings.history_url)
    out.print(f"{_safe_url(database.engine)}: schema at revision {database.head()}" + (" (brought up to date)" if action is DbAction.upgrade else ""))


def _safe_url(engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    data: Annotated[Path | None, typer.Option("--data", help="an export to show managers at / (optional)")] = None,
    config: ConfigOpt = None,
) -> None:
    """The HTTP service: POST /v1/score for the CRM, a page for managers at /."""

    if (holder := _port_holder(host, port)) is not None:
        raise InputInvalid(f"--port {port}: {host}:{port} is in use by {holder}; stop it or pass --port")
    settings = _settings(config, data)
    out.print(f"oppscore on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    _serve(settings, host, port, workers, data)


def _port_holder(host: str, port: int) -> str | None:
    """None when (host, port) can be bound; else who holds it, as far as this user may see."""
    import socket

    import psutil

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"process {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return "another process"


def _demo_request(validated, bundle) -> dict:
    """A representative open deal: the one whose score sits at the median of the open pipeline,
    sent as the page sees it (its record, stage history, activities and field history as of the
    export's end), so the curl answers the score the page shows (tested)."""
    from features.payload import deal_payload
    from scoring.score import score_open

    tables = validated.tables
    scored = score_open(bundle, tables, tables.end, with_factors=False)
    pick = scored.iloc[(scored["score"] - scored["score"].median()).abs().argsort().iloc[0]]
    return {"as_of": tables.end.isoformat(), "opportunities": [deal_payload(tables, pick["opportunity_id"], bundle.spec.segment_columns)]}


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--folder", help="where the demo export is written")] = Path("demo-data"),
    n: Annotated[int, typer.Option(min=200)] = 3000,
    host: str = "127.0.0.1",
    port: int = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="stop after training (for scripts)")] = False,
) -> None:
    """The main job on embedded defaults: demo data, training, the champion, the service on localhost.
    Run again, it reuses the champion and the key when the data did not change."""

    from features.synthetic import generate as make
    from scoring.store import champion_version, load_version

    if not no_serve and (holder := _port_holder(host, port)) is not None:
        raise InputInvalid(f"--port {port}: {host}:{port} is in use by {holder}; stop it (an earlier `make demo`?) or pass --port")
    with steps("demo data") as step:
        step("generating")
        made = make(n=n, seed=0)
        write_export(made.tables, folder)
        (folder / "oppscore.toml").write_text(settings_toml(made.stages, made.segments), encoding="utf-8")
    settings = _settings(None, folder)
    current = champion_version(settings)
    champion = load_version(settings, current) if current is not None else None
    if champion is not None and champion.metadata.get("data_fingerprint") == made.tables.fingerprint():
        out.print(f"champion v{current} was trained on these same demo data: reusing it (`oppscore train --data {folder}` retrains)")
        validated = load_export(folder, settings, utc_now())
    else:
        validated = _train_and_register(folder, settings, None, title="demo training")  # what it trained on: the export's tables
        champion = load_version(settings, champion_version(settings))
    _demo_replay(folder, settings)
    out.print(f"next: `oppscore score --data {folder} --out scores.csv`, or the page and the API below")
    if no_serve:
        return
    key, where = _api_key(settings)
    settings = settings.model_copy(update={"api_keys": [key]})
    body = json.dumps(_demo_request(validated, champion), ensure_ascii=False)
    # plain echo, not rich: the curl line must stay one line to be pasted
    typer.echo(f"\nThe service: http://{host}:{port}/  (managers' page; API docs at /docs)")
    typer.echo(f"API key: {key}  ({where})")
    typer.echo(f"Try:\n  curl -s -X POST http://{host}:{port}/v1/score -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'\n")
    _serve(settings, host, port, 1, folder)


DEMO_REPLAY_MONTHS = 6


def _demo_replay(folder: Path, settings: Settings) -> None:
    """The demo's track record from its own history: its last six months replayed (once; run
    again, what is recorded is kept), so the page shows how the scores did from the first load."""
    from scoring.history import ScoreHistory
    from training import replay as replaying

    with steps("demo replay") as step:
        step("loading")
        validated = load_export(folder, settings, utc_now())
        tables = validated.tables
        since = tables.end - pd.DateOffset(months=DEMO_REPLAY_MONTHS)
        replaying.replay(tables, validated.stages, settings, ScoreHistory.of(settings), replaying.dates(tables, validated.stages, "month", since=since), utc_now(), progress=step)


def _api_key(settings: Settings) -> tuple[str, str]:
    """The key to serve with: OPPSCORE_API_KEYS' first, else one kept under OPPSCORE_HOME
    (made once, readable by this user only), so a second demo or serve keeps the same key."""
    import secrets

    if settings.api_keys:
        return settings.api_keys[0].get_secret_value(), "from OPPSCORE_API_KEYS"
    kept = settings.home / "api_key"
    if kept.exists():
        return kept.read_text(encoding="utf-8").strip(), f"kept in {kept}"
    settings.home.mkdir(parents=True, exist_ok=True)
    key = "osk_" + secrets.token_urlsafe(24)
    kept.touch(mode=0o600)
    kept.write_text(key, encoding="utf-8")
    return key, f"made once and kept in {kept}; set OPPSCORE_API_KEYS to choose your own"
