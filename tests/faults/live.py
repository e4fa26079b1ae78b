"""Helpers of the live-path fault tests: a fresh database of each kind, a served app on a real
socket, many clients at once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlalchemy as sa

from features.loading import write_export
from features.settings import settings_toml
from tests.api.conftest import AUTH


def fresh_database(kind: str, tmp_path: Path, postgres_url: str | None) -> str:
    """A URL to a database nothing has touched: a SQLite file not yet made, or a new database
    in the test cluster."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'history.db'}"
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.replace("/postgres?", f"/{name}?")


def tables_of(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.exec_driver_sql("SELECT version_num FROM oppscore_schema_version").scalar()
    finally:
        engine.dispose()


def export_folder(tables, stages, segments, folder: Path) -> Path:
    write_export(tables, folder)
    (folder / "oppscore.toml").write_text(settings_toml(stages, segments), encoding="utf-8")
    return folder


def at_once(calls: list, workers: int) -> list:
    """Every call at once on `workers` threads; their results in order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def post_events(base: str, events: list[dict], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{base}/v1/events", json={"events": events}, headers=AUTH, timeout=timeout)
