"""The database that keeps score history and events (SQLite under OPPSCORE_HOME, or any
SQLAlchemy URL a team names in OPPSCORE_DATABASE_URL, e.g. PostgreSQL).

Why this module exists: two first requests at once used to run Alembic side by side, and
SQLite's driver commits each CREATE TABLE on its own, so a race left a half-made schema that
every later request took for a dead database. Here:

- the schema is brought up to date **once per process** per URL, under a lock that holds
  across processes (SQLite: the migration runs in a `BEGIN IMMEDIATE` transaction, which one
  process at a time may hold; PostgreSQL: a transaction-scoped advisory lock), and within a
  process behind a lock (Alembic's `context` is module-global);
- DDL is transactional on SQLite too (SQLAlchemy's documented pysqlite recipe: the driver's
  own transaction handling off, SQLAlchemy emits BEGIN), so a failed migration leaves nothing;
  a database an older oppscore left half-migrated is recognised by what it holds and repaired;
- writes start with `BEGIN IMMEDIATE` on SQLite: two writers that both read first no longer
  deadlock into an instant "database is locked";
- every failure says what happened (refused, timed out, disk full, busy) and whether what was
  being written may have been stored (`DatabaseUnavailable`).
"""

from __future__ import annotations

import errno
import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext

from features.errors import ConfigInvalid, OppscoreError

log = logging.getLogger(__name__)
METADATA = sa.MetaData()
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "oppscore_schema_version"  # its own: the database may be shared with MLflow, which keeps `alembic_version`
CONNECT_SECONDS = 5  # a database that accepts connections and never answers fails within this
MIGRATE_LOCK_SECONDS = 120  # how long a process waits for another one's migration


class DatabaseUnavailable(OppscoreError):
    """The database could not be reached, or did not do what was asked, now.

    `cause`: refused, timed out, disk full, busy, schema, failed; `maybe_stored`: whether a write
    may have been committed all the same (a deadline passed while the database still worked on
    it). Writes are idempotent, so sending the same thing again is always safe."""

    def __init__(self, message: str, cause: str = "failed", maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.cause = cause
        self.maybe_stored = maybe_stored


SAID = {
    "refused": "refused the connection (is it running, and is the URL right?)",
    "timed out": "did not answer in time",
    "disk full": "has no room left on its disk",
    "busy": "is locked by another writer",
    "schema": "does not hold the expected tables",
    "failed": "failed",
}


def cause_of(exc: BaseException) -> str:
    """What kind of failure an exception from a database call is (a key of SAID)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = str(orig).lower()
    if code == 13 or state == "53100" or getattr(orig, "errno", None) == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return "disk full"
    if code in (5, 6) or state in ("55P03", "40P01") or "database is locked" in text or "table is locked" in text:
        return "busy"
    if state == "57014" or "timeout" in text or "timed out" in text:
        return "timed out"
    if "no such table" in text or state == "42P01" or "undefinedtable" in type(orig).__name__.lower():
        return "schema"
    if getattr(orig, "errno", None) == errno.ECONNREFUSED or "connection refused" in text or "could not connect" in text or "unable to open database" in text \
            or (state or "").startswith("08"):
        return "refused"
    return "failed"


def unavailable(what: str, exc: BaseException, maybe_stored: bool = False) -> DatabaseUnavailable:
    cause = cause_of(exc)
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return DatabaseUnavailable(f"{what}: the database {SAID[cause]} ({type(exc).__name__}: {first})", cause, maybe_stored)


DRIVERS = {"postgresql": ("psycopg", "pip install 'psycopg[binary]' into oppscore's environment, or install oppscore with its [postgres] extra"),
           "mysql": ("pymysql", "pip install pymysql into oppscore's environment")}


def _engine(url: str, wait_seconds: float, statement_seconds: float | None) -> sa.Engine:
    """An engine whose connections give up after CONNECT_SECONDS, whose lock waits end after
    `wait_seconds` and whose statements (PostgreSQL) after `statement_seconds`; a missing
    driver is named with what to install."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigInvalid(f"OPPSCORE_DATABASE_URL: not a usable SQLAlchemy URL ({exc})") from None
    backend = parsed.get_backend_name()
    connect_args: dict = {}
    if backend == "sqlite":
        connect_args = {"timeout": wait_seconds}
    elif backend == "postgresql":
        options = f"-c lock_timeout={int(wait_seconds * 1000)}" + (f" -c statement_timeout={int(statement_seconds * 1000)}" if statement_seconds else "")
        connect_args = {"connect_timeout": CONNECT_SECONDS, "options": options}
    elif backend == "mysql":
        connect_args = {"connect_timeout": CONNECT_SECONDS}
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, pool_timeout=CONNECT_SECONDS, pool_pre_ping=backend != "sqlite")
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        if backend not in DRIVERS:
            raise ConfigInvalid(f"OPPSCORE_DATABASE_URL: not a usable SQLAlchemy URL ({exc})") from None
        module, remedy = DRIVERS[backend]
        raise ConfigInvalid(f"OPPSCORE_DATABASE_URL names a {backend} database, whose driver ({module}) is not installed: {remedy} ({exc})") from None
    if backend == "sqlite":
        _transactional_sqlite(engine)
    return engine


def _transactional_sqlite(engine: sa.Engine) -> None:
    """SQLAlchemy's pysqlite recipe: the driver begins nothing itself (it would not begin before
    DDL), SQLAlchemy emits BEGIN; a writing transaction takes the write lock at once."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None
        try:
            dbapi_connection.execute("PRAGMA journal_mode = WAL")  # readers go on while one writes; kept in the file once set
        except Exception:  # noqa: BLE001 - another connection holds a lock: a later connection sets it
            pass
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a process killed at any
        # point loses nothing committed; only a power cut may lose the last commits, and never
        # corrupts the file (SQLite's documentation). A commit costs no fsync.
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("oppscore_writes") else "BEGIN")


_PROCESS_LOCK = threading.Lock()  # Alembic's `context` and `op` are module globals: one migration at a time per process
_OPEN: dict[tuple[str, float, float | None], Database] = {}


class Database:
    """One database of one URL: its engine, its writes and reads, its schema."""

    def __init__(self, url: str, wait_seconds: float = CONNECT_SECONDS, statement_seconds: float | None = None) -> None:
        self.url = url
        self.wait_seconds = wait_seconds
        self.engine = _engine(url, wait_seconds, statement_seconds)
        self.backend = self.engine.dialect.name
        self.upgraded = False
        # SQLite lets one writer in at a time, and its busy handler retries by sleeping: under
        # steady contention a writer could lose every race until its timeout. Writers of this
        # process queue here instead, blocked rather than polling (other processes still meet
        # the busy handler).
        self._writers = threading.Lock() if self.backend == "sqlite" else None

    @classmethod
    def at(cls, url: str, wait_seconds: float = CONNECT_SECONDS, statement_seconds: float | None = None) -> Database:
        """The process's one handle on `url`, its schema brought up to date the first time it is
        asked for (DatabaseUnavailable when the database cannot be reached)."""
        key = (url, wait_seconds, statement_seconds)
        with _PROCESS_LOCK:
            database = _OPEN.get(key)
            if database is None:
                database = _OPEN[key] = cls(url, wait_seconds, statement_seconds)
        if not database.upgraded:
            database.upgrade()
        return database

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that writes: committed whole at the end of the block, or not at all."""
        if self._writers is not None and not self._writers.acquire(timeout=self.wait_seconds):
            raise DatabaseUnavailable(f"the database {SAID['busy']}: this process's other writers held it for {self.wait_seconds:.0f} s", "busy")
        try:
            with self.engine.connect() as connection:
                connection.execution_options(oppscore_writes=True)
                with connection.begin():
                    yield connection
        finally:
            if self._writers is not None:
                self._writers.release()

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection:
            yield connection

    def lock(self, connection: sa.Connection, keys: list[str]) -> None:
        """Serialise the writers of the same keys (a deal's events) until the transaction ends:
        PostgreSQL's transaction-scoped advisory locks, taken in one order (no deadlock);
        SQLite's writers are serialised by BEGIN IMMEDIATE already."""
        if self.backend != "postgresql" or not keys:
            return
        numbers = sorted({zlib.crc32(k.encode()) - 2**31 for k in keys})
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k"), {"keys": numbers})

    def insert_new(self, connection: sa.Connection, table: sa.Table, rows: list[dict], key: sa.Column | None = None) -> list | None:
        """Insert the rows, skipping any that a unique key already holds (a resend, or the same
        rows from another writer at the same moment): never an integrity error. Returns the
        inserted rows' `key` where the backend can say (SQLite, PostgreSQL), else None."""
        if not rows:
            return []
        if self.backend in ("sqlite", "postgresql"):
            dialect = sa.dialects.sqlite if self.backend == "sqlite" else sa.dialects.postgresql
            statement = dialect.insert(table).on_conflict_do_nothing()
            if key is not None:
                return [r[0] for r in connection.execute(statement.returning(key), rows).all()]
            connection.execute(statement, rows)
            return None
        statement = table.insert().prefix_with("IGNORE") if self.backend == "mysql" else table.insert()
        connection.execute(statement, rows)
        return None

    def upgrade(self) -> None:
        """The schema to the latest revision: once per process, one process at a time, in one
        transaction (a failure leaves the schema as it was)."""
        with _PROCESS_LOCK:
            if self.upgraded:
                return
            try:
                with self.engine.connect() as connection:
                    raw = connection.connection.driver_connection
                    if self.backend == "sqlite":  # wait for another process's migration, not for the usual lock wait
                        raw.execute(f"PRAGMA busy_timeout = {MIGRATE_LOCK_SECONDS * 1000}")
                    connection.execution_options(oppscore_writes=True)
                    with connection.begin():
                        if self.backend == "postgresql":
                            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {MIGRATE_LOCK_SECONDS * 1000}")
                            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({zlib.crc32(b'oppscore schema') - 2**31})")
                        _repair(connection)
                        config = Config()
                        config.set_main_option("script_location", str(MIGRATIONS))
                        config.attributes["connection"] = connection
                        command.upgrade(config, "head")
                    if self.backend == "sqlite":
                        raw.execute(f"PRAGMA busy_timeout = {int(self.wait_seconds * 1000)}")
            except SchemaBroken:
                raise
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                raise unavailable("bringing the schema up to date", exc) from None
            self.upgraded = True

    def head(self) -> str | None:
        """The revision the database is at (None: not made yet)."""
        with self.read() as connection:
            return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


class SchemaBroken(DatabaseUnavailable):
    """The database holds part of a revision that cannot be repaired without losing rows."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "schema")


# What each revision made, to recognise a database that an older oppscore left half-migrated
# (its DDL was committed statement by statement): tables, and the indexes that came last.
FOOTPRINT = {
    "0001": {"tables": ["scores"], "indexes": {"scores": ["scores_by_deal"]}},
    "0002": {"tables": ["runs", "forecasts"], "indexes": {"runs": ["runs_by_time"], "forecasts": ["forecasts_by_period"], "scores": ["scores_by_run"]}},
    "0003": {"tables": ["events"], "indexes": {"events": ["events_by_deal", "events_by_time"]}},
}


def _repair(connection: sa.Connection) -> None:
    """A database without a recorded revision that holds tables of ours: stamp the last
    revision it holds whole; drop the empty tables of a revision it holds in part (made by a
    migration that failed half-way), so that the upgrade makes them again."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if not tables & {t for f in FOOTPRINT.values() for t in f["tables"]}:
        return
    current = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
    if current is not None:
        return
    whole = None
    for revision, made in FOOTPRINT.items():
        present = [t for t in made["tables"] if t in tables]
        indexes_there = all(i in {x["name"] for x in inspector.get_indexes(t)} for t, names in made["indexes"].items() if t in tables for i in names)
        if len(present) == len(made["tables"]) and all(t in tables for t in made["indexes"]) and indexes_there:
            whole = revision
            continue
        for table in present:  # part of this revision: made by a migration that did not finish
            rows = connection.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar()
            if rows:
                raise SchemaBroken(f"the database holds table {table!r} of schema revision {revision} with {rows} rows but no record of the revision: "
                                   f"back it up, then record the revision by hand (`alembic stamp {revision}` with oppscore's migrations) and run `oppscore db upgrade`")
            log.warning("database: dropping the empty table %r, left by a migration to revision %s that did not finish; it is made again now", table, revision)
            connection.exec_driver_sql(f'DROP TABLE "{table}"')
        break
    if whole is not None:
        log.warning("database: it held the tables of schema revision %s without a record of it (a migration interrupted by an older oppscore); recorded as %s", whole, whole)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.stamp(config, whole)
