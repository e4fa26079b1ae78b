"""The service's database (score history and events), held for the whole process.

Why it is built this way (issue 39): a request used to open the database itself, so two first
requests migrated it side by side; any failure, a duplicate's integrity clash included, shut
it for a minute, after which every waiting request reconnected at once; and a 503 said
"nothing was stored" when a slow commit landed a second later. Here:

- the database is opened and its schema brought up to date once, in the background, when the
  service starts (or when the first event needs it); requests that come meanwhile wait for it,
  within the deadline, and never migrate anything themselves;
- every call runs on the database's own threads and is waited for `[serving] database_seconds`
  at most; the database gives up on a lock a second sooner, so a refusal it reports is certain
  ("nothing was stored"), and only a deadline passed while it still worked is "may have been
  stored" (resending is safe: events are stored once per id);
- after a miss, requests fail fast (503 with Retry-After, saying why: refused, timed out, disk
  full, busy) while one probe in the background reconnects, tried again after 1, 2, 4 … 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from features.settings import Settings
from scoring.database import SAID, DatabaseUnavailable, unavailable
from scoring.events import EventStore
from scoring.history import ScoreHistory, database_of

log = logging.getLogger(__name__)
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 1.0, 30.0
STARTING = "starting"  # a cause of our own: the database is being opened


@dataclass(frozen=True)
class Handles:
    history: ScoreHistory
    events: EventStore


class ServiceDatabase:
    """The database of one service process: closed → opening → up ⇄ down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deadline = settings.serving.database_seconds
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="database")
        self._lock = threading.Lock()
        self._state = "closed"
        self._opened = threading.Event()  # the first opening has ended, either way
        self._handles: Handles | None = None
        self._failure: DatabaseUnavailable | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY_SECONDS
        self._probing = False

    # -- state ------------------------------------------------------------------------------

    def at_hand(self) -> bool:
        """Whether the database exists or is named (a SQLite file made by `oppscore score`
        after the service started is found here too)."""
        return self.settings.database_url is not None or (self.settings.home / "history.db").exists()

    def start(self) -> None:
        """At start-up: open it in the background when it exists, is named, or will be written."""
        if self.at_hand() or self.settings.serving.record_scores:
            self._begin("opening")

    def _begin(self, state: str) -> None:
        with self._lock:
            if self._state not in ("closed", "down") or self._probing:
                return
            self._state, self._probing = state, True
        threading.Thread(target=self._open, name=f"database-{state}", daemon=True).start()

    def _open(self) -> None:
        """Open (and bring the schema up to date, once per process) or probe; the only place
        that connects after a failure."""
        try:
            database = database_of(self.settings, wait_seconds=max(self.deadline - 1.0, 0.5), statement_seconds=max(self.deadline - 0.5, 0.5))
            if self._failure is not None and self._failure.cause == "schema":  # tables gone (a file deleted, a database restored): made again
                database.upgraded = False
                database.upgrade()
            with database.read() as connection:
                connection.exec_driver_sql("SELECT 1")
            handles = Handles(ScoreHistory(database, self.settings.model_name), EventStore(database, self.settings.model_name))
            with self._lock:
                was = self._state
                self._handles, self._state, self._failure, self._backoff = handles, "up", None, FIRST_RETRY_SECONDS
            if was == "probing":
                log.warning("database: answering again")
        except DatabaseUnavailable as exc:
            self._down(exc)
        except Exception as exc:  # noqa: BLE001 - a driver's own error class: still a database that is not there
            self._down(unavailable("opening the database", exc))
        finally:
            with self._lock:
                self._probing = False
            self._opened.set()

    def _down(self, failure: DatabaseUnavailable) -> None:
        with self._lock:
            first = self._state not in ("down", "probing")
            self._state, self._failure = "down", failure
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, LAST_RETRY_SECONDS)
        if first:
            log.warning("database: %s; requests that need it are answered 503 at once while one probe tries again", failure)

    def history(self, wait: bool = False) -> ScoreHistory | None:
        """The score history for a request that can go without it: None when there is none, it
        is still opening (unless `wait`), or it is down."""
        try:
            handles = self.handles(wait=wait)
        except DatabaseUnavailable:
            return None
        return handles.history if handles is not None else None

    def retry_after(self) -> int:
        """Seconds a client should wait before sending again (Retry-After)."""
        return max(1, round(self._retry_at - time.monotonic())) if self._state == "down" else 1

    def handles(self, create: bool = False, wait: bool = True) -> Handles | None:
        """The stores, or None when there is no database and none is wanted (`create`: an event
        is to be stored, so one is made). While it opens: waited for (`wait`) within the
        deadline, else None. When it is down: DatabaseUnavailable at once (nothing was tried,
        so nothing was stored), and a probe is started when the retry time has come."""
        state = self._state
        if state == "closed":
            if not (create or self.at_hand() or self.settings.serving.record_scores):
                return None
            self._begin("opening")
            state = self._state
        if state in ("down", "probing"):
            if state == "down" and time.monotonic() >= self._retry_at:
                self._begin("probing")
            failure = self._failure
            raise DatabaseUnavailable(f"{failure} (not tried again by this request: one probe reconnects in the background)", failure.cause if failure else "failed")
        if state == "opening":
            if not wait:
                return None
            if not self._opened.wait(self.deadline) or self._handles is None:
                if self._state == "down" and self._failure is not None:
                    raise DatabaseUnavailable(str(self._failure), self._failure.cause)
                raise DatabaseUnavailable(f"the database is being opened and did not become ready within {self.deadline:.0f} s", STARTING)
        return self._handles

    # -- calls ------------------------------------------------------------------------------

    def run(self, what: str, call, *args, writes: bool = False):
        """`call(*args)` on the database's threads, waited for the deadline at most."""
        future = self.pool.submit(call, *args)
        try:
            return future.result(timeout=self.deadline)
        except TimeoutError:
            raise self._missed(what, writes) from None
        except DatabaseUnavailable as exc:
            self._failed(exc)
            raise

    async def arun(self, what: str, call, *args, writes: bool = False):
        """`run` for a coroutine: the event loop goes on while the database thread works."""
        future = asyncio.wrap_future(self.pool.submit(call, *args))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=self.deadline)
        except TimeoutError:
            raise self._missed(what, writes) from None
        except DatabaseUnavailable as exc:
            self._failed(exc)
            raise

    def _failed(self, failure: DatabaseUnavailable) -> None:
        """A lock held by another writer is contention, not a database gone: that request is
        answered 503 (nothing stored) and the others go on trying."""
        if failure.cause != "busy":
            self._down(failure)

    def _missed(self, what: str, writes: bool) -> DatabaseUnavailable:
        failure = DatabaseUnavailable(f"{what}: the database {SAID['timed out']} (no answer within {self.deadline:.0f} s)", "timed out", maybe_stored=writes)
        self._down(DatabaseUnavailable(f"the database {SAID['timed out']} (no answer within {self.deadline:.0f} s)", "timed out"))
        return failure

    def optional(self, what: str, call, *args):
        """A read that a request can do without (the previous scores): None when it fails."""
        try:
            return self.run(what, call, *args)
        except DatabaseUnavailable as exc:
            log.info("%s skipped: %s", what, exc)
            return None

    async def aoptional(self, what: str, call, *args):
        try:
            return await self.arun(what, call, *args)
        except DatabaseUnavailable as exc:
            log.info("%s skipped: %s", what, exc)
            return None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
