"""Events a CRM sends as they happen (POST /v1/events): rows of the contract's tables, stored
once per event id, and laid over the served export so that a deal's score follows them.

Idempotent and order-free: a resent event is a no-op inside the database (insert-or-ignore,
then the content compared: the same id with other content is a conflict, never a silent
overwrite), so two copies arriving at once are as harmless as one sent twice. Rows are
appended to the deal's history and sorted by their own times, so arrival order changes
nothing. An opportunities event names the fields of the record that changed; they are laid
over the export's record in `changed_at` order (ties by event id), so of two changes of a field
the later stands. A field change of amount or expected close date also moves the record's
current value when it is the newest change of that field, as the CRM's next export would.

Checked when they arrive: a batch whose events would leave a deal breaking the contract (a
stage the model does not know, a stage entered before the deal was created, …) is refused
whole, naming the event and field. Rules that depend on arrival order (a stage row before its
deal's record, a record before its first stage) are not refusals: a deal without a record is
not found, a record without a stage is "no stage yet". A deal's events can be corrected:
`delete` removes one by id (then the corrected event may be sent under the same id).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.contract import rule_problems
from features.errors import ExportInvalid, Problem
from features.settings import StageConfig
from features.stages import StageOrder
from features.tables import ACTIVITIES, FIELD_HISTORY, OPPORTUNITIES, REQUIRED, STAGE_HISTORY, TIMESTAMPS, Columns, Tables, empty
from features.times import NAT, ns
from scoring.database import METADATA, Database, DatabaseUnavailable, unavailable
from scoring.history import _utc, database_of

EVENTS = sa.Table(
    "events",
    METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("opportunity_id", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("row", sa.JSON, nullable=False),
    sa.UniqueConstraint("model_name", "event_id", name="one_event_per_id"),
    sa.Index("events_by_deal", "model_name", "opportunity_id"),
    sa.Index("events_by_time", "model_name", "at"),
)
EVENT_COUNTS = sa.Table(  # kept with the events in each transaction that stores or deletes some
    "event_counts",
    METADATA,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)
KINDS = (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)
CURRENT = ("amount", "expected_close_date")  # fields whose change moves the record's current value (same name in both tables)
CHUNK = 900  # ids per IN list (SQLite's default limit on bound parameters is 999)
ATTEMPTS = 5  # reads and checks of a batch whose deals other processes change meanwhile, before it is answered "busy"
ORDER_DEPENDENT = "opportunity_id"  # the rules on this column (a row of a deal without a record, a record without a stage) depend on arrival order


class EventConflict(ValueError):
    """Event ids already stored with other content."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        super().__init__(f"{len(ids)} event id(s) already stored with other content: {', '.join(ids[:10])}; an event id names one event, for good "
                         "(DELETE /v1/events/{event_id} removes one sent in error, then the corrected event may be sent under its id)")


@dataclass(frozen=True)
class Refusal:
    """One reason a batch was refused: the event to blame (its id), the field, and what is wrong."""

    event_id: str
    opportunity_id: str
    field: str | None
    message: str


class EventsRefused(ValueError):
    """Events that would leave their deal breaking the contract: nothing of the batch is stored."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        super().__init__("; ".join(f"event {r.event_id}: {r.message}" for r in refusals[:10]))


@dataclass(frozen=True)
class Event:
    """One event as stored: its id, which table its row belongs to, the row (JSON-ready, times
    as ISO text), and the time that orders it (the row's own time; an opportunities event's
    `changed_at`)."""

    event_id: str
    kind: str
    row: dict
    at: pd.Timestamp

    @property
    def opportunity_id(self) -> str:
        return str(self.row["opportunity_id"])

    @cached_property
    def digest(self) -> str:
        text = json.dumps({"kind": self.kind, "row": self.row, "at": self.at.isoformat()}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Changed:
    """The deals whose stored events another writer changed since they were checked."""

    deals: list[str]


@dataclass(frozen=True)
class Stored:
    accepted: int
    duplicates: int
    opportunities: list[str]


Check = Callable[[list[Event], list[Event]], None]  # (the deals' stored events, the events arriving or leaving) → raises EventsRefused
Call = Callable[..., object]  # call(what, step, *args, writes=False): how a database step is run


def direct(what: str, step, *args, writes: bool = False):
    """Run a database step here and now (a command; the service waits on its own threads)."""
    return step(*args)


_STRIPES = [threading.Lock() for _ in range(64)]


def _utc_stamp(value) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class EventStore:
    def __init__(self, database: Database | str, model_name: str) -> None:
        self.model_name = model_name
        self.database = Database.at(database) if isinstance(database, str) else database

    @classmethod
    def of(cls, settings) -> EventStore:
        return cls(database_of(settings), settings.model_name)

    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    def add(self, events: list[Event], received_at: pd.Timestamp, check: Check | None = None, call: Call = direct) -> Stored:
        """Store the new events in one transaction; resent ones are counted, not stored again;
        an id stored with other content refuses the whole batch (`EventConflict`), and so does
        `check` (`EventsRefused`).

        Read the batch's ids and its deals' stored events, and check (CPU work, outside any
        database transaction and deadline), side by side with other batches; then write, in
        this process one writer at a time per deal (`_deal_locks`), only if the deals' events
        are still the ones checked. The deals another writer changed meanwhile are read and
        checked again, alone, under the same turn (so this process never retries for long);
        another process's writer is caught at the write likewise. `call(what, step, *args,
        writes=)` runs each database step (the service: on its threads, within its deadline)."""
        mine: dict[str, Event] = {}
        for e in events:  # the same id twice in one batch: the same event, or a conflict
            if e.event_id in mine and mine[e.event_id].digest != e.digest:
                raise EventConflict([e.event_id])
            mine[e.event_id] = e
        new, checked = self._read_and_check(mine, list(mine), check, call)
        if not new:
            return Stored(0, len(events), [])
        with self._deal_locks(sorted({e.opportunity_id for e in new.values()})):
            for _ in range(ATTEMPTS):
                written = call(f"storing {len(new)} events", self._commit, list(new.values()), checked if check is not None else None, received_at, writes=True)
                if isinstance(written, Changed):  # other writers added to these deals since they were checked: those deals again
                    again, rechecked = self._read_and_check(mine, [i for i, e in new.items() if e.opportunity_id in written.deals], check, call)
                    new = {i: e for i, e in new.items() if e.opportunity_id not in written.deals or i in again}
                    checked.update(rechecked)
                    if not new:
                        return Stored(0, len(events), [])
                    continue
                missed = [i for i in new if i not in written]
                if missed:  # stored meanwhile under the same id by a writer of another deal
                    clash = sorted(i for i, d in call("reading the events of the batch's deals", self._snapshot, missed)[0].items() if d != mine[i].digest)
                    if clash:
                        raise EventConflict(clash)
                stored = [e for i, e in new.items() if i in written]
                return Stored(len(stored), len(events) - len(stored), sorted({e.opportunity_id for e in stored}))
        raise DatabaseUnavailable(f"storing the events: other processes changed their deals under {ATTEMPTS} checks in a row; nothing was stored", "busy")

    def _read_and_check(self, mine: dict[str, Event], ids: list[str], check: Check | None, call: Call) -> tuple[dict[str, Event], dict[str, set[str]]]:
        """Of `ids`, the events not stored yet (a stored one with other content: `EventConflict`),
        checked against the stored events of their deals; and the stored event ids of each of
        those deals, as checked. A resent event's deal is neither read nor checked."""
        known, stored = call("reading the events of the batch's deals", self._snapshot, ids, {i: mine[i].opportunity_id for i in ids} if check is not None else None)
        conflicts = sorted(i for i, d in known.items() if d != mine[i].digest)
        if conflicts:
            raise EventConflict(conflicts)
        new = {i: mine[i] for i in ids if i not in known}
        if new and check is not None:
            check(stored, list(new.values()))
        checked: dict[str, set[str]] = {e.opportunity_id: set() for e in new.values()}
        for e in stored:
            checked.setdefault(e.opportunity_id, set()).add(e.event_id)
        return new, checked

    def _snapshot(self, ids: list[str], deal_of: dict[str, str] | None = None) -> tuple[dict[str, str], list[Event]]:
        """The digests of the ids already stored, and (with `deal_of`, each id's deal) every
        stored event of the deals of the ids not stored yet, read in the same transaction."""
        try:
            with self.database.read() as connection:
                known = self._digests(connection, ids)
                deals = sorted({deal_of[i] for i in ids if i not in known}) if deal_of is not None else []
                return known, self._of_deals(connection, deals)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("reading the events", exc) from None

    def _commit(self, new: list[Event], checked: dict[str, set[str]] | None, received_at: pd.Timestamp) -> set[str] | Changed:
        """Insert the new events unless some of their deals' events are no longer as `checked`
        (those deals then, `Changed`); the ids inserted (a resend arriving at the same moment is
        skipped, never an error)."""
        try:
            with self.database.write() as connection:
                if checked is not None:
                    deals = sorted({e.opportunity_id for e in new})
                    self.database.lock(connection, [f"{self.model_name}\x1f{d}" for d in deals])
                    now = self._ids_by_deal(connection, deals)
                    changed = [d for d in deals if now.get(d, set()) != checked.get(d, set())]
                    if changed:
                        return Changed(changed)
                received = _utc(received_at)
                inserted = self.database.insert_new(connection, EVENTS, [self._row(e, received) for e in new], key=EVENTS.c.event_id)
                if inserted is None:  # a backend that cannot say which: those whose digest is stored now (a clash is found after)
                    inserted = list(self._digests(connection, [e.event_id for e in new]))
                self._counted(connection, len(inserted))  # last: the one row every writer updates is locked until the commit only
                return set(inserted)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("storing the events", exc) from None

    @contextmanager
    def _deal_locks(self, deals: list[str]):
        """This process's writers of the same deals take turns (stripes of locks, taken in one
        order: no deadlock)."""
        stripes = sorted({zlib.crc32(d.encode()) % len(_STRIPES) for d in deals})
        for k in stripes:
            _STRIPES[k].acquire()
        try:
            yield
        finally:
            for k in reversed(stripes):
                _STRIPES[k].release()

    def _ids_by_deal(self, connection: sa.Connection, deals: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for start in range(0, len(deals), CHUNK):
            query = sa.select(EVENTS.c.opportunity_id, EVENTS.c.event_id).where(EVENTS.c.model_name == self.model_name, EVENTS.c.opportunity_id.in_(deals[start:start + CHUNK]))
            for deal, event_id in connection.execute(query):
                found.setdefault(deal, set()).add(event_id)
        return found

    def delete(self, event_id: str, check: Check | None = None) -> Event:
        """Remove one event (LookupError when no event has this id); `check` may refuse it when
        its deal would break the contract without it."""
        try:
            with self.database.write() as connection:
                found = connection.execute(sa.select(EVENTS.c.opportunity_id).where(EVENTS.c.model_name == self.model_name, EVENTS.c.event_id == event_id)).first()
                if found is None:
                    raise LookupError(event_id)
                self.database.lock(connection, [f"{self.model_name}\x1f{found[0]}"])
                stored = self._of_deals(connection, [found[0]])
                gone = next((e for e in stored if e.event_id == event_id), None)
                if gone is None:  # deleted meanwhile
                    raise LookupError(event_id)
                if check is not None:
                    check(stored, [gone])
                connection.execute(EVENTS.delete().where(EVENTS.c.model_name == self.model_name, EVENTS.c.event_id == event_id))
                self._counted(connection, -1)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("deleting the event", exc) from None
        return gone

    def _row(self, e: Event, received_at) -> dict:
        return {"model_name": self.model_name, "event_id": e.event_id, "kind": e.kind, "opportunity_id": e.opportunity_id, "at": _utc(e.at),
                "received_at": received_at, "digest": e.digest, "row": e.row}

    def _digests(self, connection: sa.Connection, ids: list[str]) -> dict[str, str]:
        known: dict[str, str] = {}
        for start in range(0, len(ids), CHUNK):
            rows = connection.execute(sa.select(EVENTS.c.event_id, EVENTS.c.digest).where(EVENTS.c.model_name == self.model_name, EVENTS.c.event_id.in_(ids[start:start + CHUNK])))
            known.update(dict(rows.all()))
        return known

    def _of_deals(self, connection: sa.Connection, ids: list[str]) -> list[Event]:
        out = []
        for start in range(0, len(ids), CHUNK):
            query = sa.select(EVENTS.c.event_id, EVENTS.c.kind, EVENTS.c.row, EVENTS.c.at).where(
                EVENTS.c.model_name == self.model_name, EVENTS.c.opportunity_id.in_(ids[start:start + CHUNK]))
            rows = connection.execute(query).all()
            times = pd.to_datetime([r.at for r in rows], utc=True)  # at once: a Timestamp made per row was a tenth of a batch's reading
            out += [Event(r.event_id, r.kind, r.row, at) for r, at in zip(rows, times, strict=True)]
        return out

    def of_deals(self, ids: list[str]) -> list[Event]:
        """Every stored event of these deals."""
        try:
            with self.database.read() as connection:
                return self._of_deals(connection, ids)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("reading the events", exc) from None

    def latest(self, until: pd.Timestamp) -> pd.Timestamp | None:
        """The newest row time of any stored event up to `until` (now: an event planned for
        later is not yet): how far the live pipeline reaches."""
        try:
            with self.database.read() as connection:
                at = connection.execute(sa.select(sa.func.max(EVENTS.c.at)).where(EVENTS.c.model_name == self.model_name, EVENTS.c.at <= _utc(until))).scalar()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("reading the events", exc) from None
        return None if at is None else _utc_stamp(at)

    def _counted(self, connection: sa.Connection, change: int) -> None:
        """Add `change` to this model's count of stored events, in the caller's transaction."""
        if not change:
            return
        done = connection.execute(EVENT_COUNTS.update().where(EVENT_COUNTS.c.model_name == self.model_name).values(events=EVENT_COUNTS.c.events + change))
        if done.rowcount == 0:  # the model's first events: its row, unless a writer of other deals made it meanwhile
            inserted = self.database.insert_new(connection, EVENT_COUNTS, [{"model_name": self.model_name, "events": change}], key=EVENT_COUNTS.c.model_name)
            if inserted is not None and not inserted:
                connection.execute(EVENT_COUNTS.update().where(EVENT_COUNTS.c.model_name == self.model_name).values(events=EVENT_COUNTS.c.events + change))

    def count(self) -> int:
        """The model's stored events, as kept beside them (not counted again)."""
        try:
            with self.database.read() as connection:
                return int(connection.execute(sa.select(EVENT_COUNTS.c.events).where(EVENT_COUNTS.c.model_name == self.model_name)).scalar() or 0)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("counting the events", exc) from None


# ---- a deal's rows: the export's with its events laid over ----------------------------------


def _rows(events: list[Event], kind: str) -> tuple[pd.DataFrame, list[str]]:
    chosen = sorted((e for e in events if e.kind == kind), key=lambda e: (e.at, e.event_id))
    frame = pd.DataFrame([e.row for e in chosen])
    for col in TIMESTAMPS[kind]:
        if col in frame.columns:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return frame, [e.event_id for e in chosen]


def _records(given: pd.DataFrame, events: list[Event]) -> pd.DataFrame:
    """Opportunity records with the events' fields laid over, oldest change first: a field an
    event names takes its value (null empties it), the others keep the export's (or an earlier
    event's)."""
    sent = sorted((e for e in events if e.kind == OPPORTUNITIES), key=lambda e: (e.at, e.event_id))
    if not sent:
        return given
    records = {r["opportunity_id"]: r for r in given.to_dict("records")}
    for e in sent:
        fields = {k: _utc_stamp(v) if k in TIMESTAMPS[OPPORTUNITIES] and v is not None else v for k, v in e.row.items()}
        records[e.opportunity_id] = {**records.get(e.opportunity_id, {}), **fields}
    frame = pd.DataFrame(list(records.values()))
    for col in REQUIRED[OPPORTUNITIES] + ["expected_close_date"]:
        if col not in frame.columns:
            frame[col] = None
    return frame


def overlay(tables: Tables | None, ids: list[str], events: list[Event], current: bool = True,
            rows_of: list[str] | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, list[str | None]]]:
    """These deals' rows of the served export (none without one) with their events laid over,
    as the CRM's next export would hold them: a frame per table, and per row where it came from
    (an event id; None for the export's own rows). A record without created_at or amount is
    not a record yet (its creation event has not arrived). `current`: the records' amount and
    close date follow their field changes (scoring reads them; the contract's rules do not).
    `rows_of`: the deals whose export rows other than their record are laid in (default all)."""
    records = tables.of_many(ids, records_only=True) if tables is not None else None
    rows = tables.of_many(ids if rows_of is None else rows_of) if tables is not None and (rows_of is None or rows_of) else None
    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, list[str | None]] = {}
    for kind in KINDS:
        base = records if kind == OPPORTUNITIES else rows
        given = base.frame(kind) if base is not None else empty(kind)
        if kind == OPPORTUNITIES:
            frame = _records(given, events)
            frame = frame[frame["created_at"].notna() & frame["amount"].notna()].reset_index(drop=True)
            source = [None] * len(frame)  # a record is named by its deal (`_where`)
        else:
            added, ids_of = _rows(events, kind)
            if len(added):
                frame = pd.concat([given, added], ignore_index=True) if len(given) else added.reset_index(drop=True)
                source = [None] * len(given) + ids_of
                again = frame.duplicated().to_numpy()  # a row the export holds too (re-sent, or exported since): once
                frame, source = frame[~again].reset_index(drop=True), [s for s, d in zip(source, again, strict=True) if not d]
            else:
                frame, source = given.reset_index(drop=True), [None] * len(given)
        frames[kind], sources[kind] = frame, source
    if current and len(frames[FIELD_HISTORY]):
        frames[OPPORTUNITIES] = _current_values(frames[OPPORTUNITIES], frames[FIELD_HISTORY], [s is not None for s in sources[FIELD_HISTORY]])
    return frames, sources


def _current_values(opps: pd.DataFrame, fields: pd.DataFrame, sent: list[bool]) -> pd.DataFrame:
    """A record's amount and close date follow a field-change event that is the newest change
    of that field (a change the export already held leaves the export's value)."""
    if not any(sent) or opps.empty:
        return opps
    opps = opps.copy()
    fields = fields.assign(_sent=sent)
    for field in CURRENT:
        mine = fields[fields["field"] == field].sort_values("changed_at", kind="stable")
        newest = mine.groupby("opportunity_id").tail(1)
        newest = newest[newest["_sent"]]
        if newest.empty:
            continue
        value = pd.Series(newest["value"].to_numpy(), index=newest["opportunity_id"].to_numpy())
        hit = opps["opportunity_id"].isin(value.index)
        if field == "amount":
            opps.loc[hit, field] = pd.to_numeric(opps.loc[hit, "opportunity_id"].map(value)).to_numpy()
        else:
            current = pd.to_datetime(opps[field] if field in opps.columns else pd.Series(pd.NaT, index=opps.index), utc=True)
            new = pd.to_datetime(opps["opportunity_id"].map(value), utc=True, format="ISO8601")
            opps[field] = current.where(~hit, new)
    return opps


def _columns(frame: pd.DataFrame, kind: str) -> Columns:
    """Rows as the contract's arrays (times int64 ns UTC, amount float, the rest objects with
    None), built column by column: a live score asks for one deal at a time."""
    out: Columns = {}
    for col in frame.columns:
        values = frame[col]
        if col in TIMESTAMPS[kind]:
            out[col] = ns(pd.to_datetime(values, utc=True)) if values.dtype == object else ns(values)
        elif col == "amount":
            out[col] = pd.to_numeric(values).to_numpy(dtype="float64")
        else:
            array = values.to_numpy(dtype=object)
            out[col] = np.where(pd.isna(array), None, array)
    n = len(frame)
    for col in REQUIRED[kind]:
        if col not in out:
            out[col] = np.full(n, NAT, dtype=np.int64) if col in TIMESTAMPS[kind] else np.full(n, None, dtype=object)
    return out


def _where(frames: dict[str, pd.DataFrame], sources: dict[str, list[str | None]]):
    """Locators that name each row by where it came from: an event id, or the export."""

    def of(kind: str):
        ids = frames[kind]["opportunity_id"].tolist()
        if kind == OPPORTUNITIES:
            return lambda i: f"the record of opportunity {ids[i]}"
        return lambda i: f"event {sources[kind][i]}" if sources[kind][i] is not None else f"the export's {kind} row of opportunity {ids[i]}"

    return {kind: of(kind) for kind in KINDS}


def problems_of(frames: dict[str, pd.DataFrame], sources: dict[str, list[str | None]], stages: StageConfig | None) -> list[Problem]:
    """The contract's problems of these rows, less those that depend on the order events arrive
    in. A time after now is not one: an event may tell of what is planned (a meeting next
    week), and counts from its time on, as every row does."""
    columns = {kind: _columns(frames[kind], kind) for kind in KINDS}
    names = StageOrder(stages).names if stages is not None else None
    return [p for p in rule_problems(columns, names, None, _where(frames, sources)) if p.column != ORDER_DEPENDENT]


def checker(tables: Tables | None, stages: StageConfig | None, removing: bool = False) -> Check:
    """A `Check` for `EventStore.add` (or `.delete`, `removing`): the events' deals are checked
    as they are stored and as they would be; a problem that is new is a refusal, blamed on the
    event whose row shows it, or on the batch's events of that deal when the row is another's
    (a record whose created_at moves after a stored stage entry)."""

    def check(stored: list[Event], changing: list[Event]) -> None:
        deals = sorted({e.opportunity_id for e in changing})
        gone = {e.event_id for e in changing} if removing else set()
        after_events = [e for e in stored if e.event_id not in gone] if removing else stored + changing
        # A row is checked against its deal's record only: the export's other rows passed when it
        # was read, and can break only when their record changes (a record event among these)
        recorded = sorted({e.opportunity_id for e in changing if e.kind == OPPORTUNITIES})
        after = problems_of(*overlay(tables, deals, after_events, current=False, rows_of=recorded), stages)
        if not after:
            return
        key = lambda p: (p.table, p.location, p.column, p.found, p.expected)  # noqa: E731
        before = {key(p) for p in problems_of(*overlay(tables, deals, stored, current=False, rows_of=recorded), stages)}  # a deal broken already: only what is new refuses
        refusals = []
        for p in after:
            if key(p) in before:
                continue
            source = p.location.removeprefix("event ") if p.location and p.location.startswith("event ") else None
            deal = _deal_of(p, after_events, source)
            mine = sorted((e for e in changing if e.opportunity_id == deal), key=lambda e: e.kind != OPPORTUNITIES) or changing  # a record first: its created_at rules the others
            blamed = source if source in {e.event_id for e in changing} else mine[0].event_id
            said = f"{p.column}: found {p.found}, expected {p.expected}"
            if blamed != source:
                said = f"{'removing it' if removing else 'with it'}, {p.location} of opportunity {deal} would break the contract: {said}"
            refusals.append(Refusal(blamed, deal, p.column if blamed == source else None, said))
        if refusals:
            raise EventsRefused(refusals)

    return check


def _deal_of(p: Problem, events: list[Event], source: str | None) -> str:
    if source is not None:
        found = next((e.opportunity_id for e in events if e.event_id == source), None)
        if found is not None:
            return found
    return (p.location or "").rsplit("of opportunity ", 1)[-1]


def live_tables(tables: Tables | None, opportunity_id: str, events: list[Event], stages: StageConfig) -> Tables | None:
    """One deal's checked tables; None when it has a record but no stage yet. LookupError when
    neither the export nor an event holds its record (with created_at and amount); ExportInvalid
    naming the rows' events when its rows break the contract together (events stored before
    they were checked on arrival, or a champion with other stage names)."""
    frames, sources = overlay(tables, [opportunity_id], events)
    if frames[OPPORTUNITIES].empty:
        raise LookupError(opportunity_id)
    problems = problems_of(frames, sources, stages)
    if problems:
        raise ExportInvalid(problems)
    if frames[STAGE_HISTORY].empty:
        return None
    columns = {kind: _columns(frames[kind], kind) for kind in KINDS}
    return Tables.of_columns(columns[OPPORTUNITIES], columns[STAGE_HISTORY], columns[ACTIVITIES], columns[FIELD_HISTORY])


def live_end(tables: Tables | None, latest: pd.Timestamp | None) -> pd.Timestamp | None:
    """'Now' for the live pipeline: the newest time of the export or of any event."""
    stamps = [t for t in (tables.end if tables is not None else None, latest) if t is not None]
    return max(stamps) if stamps else None
