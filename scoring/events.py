"""Events a CRM sends as they happen (POST /v1/events): rows of the contract's tables, stored
once per event id, and laid over the served export so that a deal's score follows them.

Idempotent and order-free: a resent event is a no-op (the same id with other content is a
conflict, never a silent overwrite); rows are appended to the deal's history and sorted by
their own times, so arrival order changes nothing. An opportunities event names the fields of
the record that changed; they are laid over the export's record in `changed_at` order (ties by
event id), so of two changes of a field the later stands. A field change of amount or expected
close date also moves the record's current value when it is the newest change of that field,
as the CRM's next export would show it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.contract import validate_columns
from features.settings import StageConfig
from features.tables import ACTIVITIES, FIELD_HISTORY, OPPORTUNITIES, REQUIRED, STAGE_HISTORY, TIMESTAMPS, Columns, Tables, empty
from features.times import NAT, ns
from scoring.history import METADATA, HistoryUnavailable, _engine, _utc, migrate

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
KINDS = (OPPORTUNITIES, STAGE_HISTORY, ACTIVITIES, FIELD_HISTORY)
CURRENT = ("amount", "expected_close_date")  # fields whose change moves the record's current value (same name in both tables)
CHUNK = 900  # ids per IN list (SQLite's default limit on bound parameters is 999)


class EventConflict(ValueError):
    """Event ids already stored with other content."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        super().__init__(f"{len(ids)} event id(s) already stored with other content: {', '.join(ids[:10])}; an event id names one event, for good")


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

    @property
    def digest(self) -> str:
        text = json.dumps({"kind": self.kind, "row": self.row, "at": self.at.isoformat()}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Stored:
    accepted: int
    duplicates: int
    opportunities: list[str]


class EventStore:
    def __init__(self, url: str, model_name: str) -> None:
        self.model_name = model_name
        self.engine = _engine(url)
        try:
            migrate(self.engine)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the events' database did not answer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None

    @classmethod
    def of(cls, settings) -> EventStore:
        if settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings.history_url, settings.model_name)

    def add(self, events: list[Event], received_at: pd.Timestamp) -> Stored:
        """Store the new events in one transaction; resent ones are counted, not stored again;
        an id stored with other content refuses the whole batch (`EventConflict`)."""
        mine = {}
        for e in events:  # the same id twice in one batch: the same event, or a conflict
            if e.event_id in mine and mine[e.event_id].digest != e.digest:
                raise EventConflict([e.event_id])
            mine[e.event_id] = e
        with self.engine.begin() as connection:
            known: dict[str, str] = {}
            ids = list(mine)
            for start in range(0, len(ids), CHUNK):
                rows = connection.execute(sa.select(EVENTS.c.event_id, EVENTS.c.digest).where(EVENTS.c.model_name == self.model_name, EVENTS.c.event_id.in_(ids[start:start + CHUNK])))
                known.update(dict(rows.all()))
            conflicts = [i for i, d in known.items() if d != mine[i].digest]
            if conflicts:
                raise EventConflict(sorted(conflicts))
            new = [e for i, e in mine.items() if i not in known]
            if new:
                connection.execute(EVENTS.insert(), [
                    {"model_name": self.model_name, "event_id": e.event_id, "kind": e.kind, "opportunity_id": e.opportunity_id, "at": _utc(e.at),
                     "received_at": _utc(received_at), "digest": e.digest, "row": e.row} for e in new
                ])
        return Stored(len(new), len(events) - len(new), sorted({e.opportunity_id for e in new}))

    def of_deals(self, ids: list[str]) -> list[Event]:
        """Every stored event of these deals."""
        out = []
        with self.engine.connect() as connection:
            for start in range(0, len(ids), CHUNK):
                query = sa.select(EVENTS.c.event_id, EVENTS.c.kind, EVENTS.c.row, EVENTS.c.at).where(
                    EVENTS.c.model_name == self.model_name, EVENTS.c.opportunity_id.in_(ids[start:start + CHUNK]))
                out += [Event(r.event_id, r.kind, r.row, pd.Timestamp(r.at).tz_localize("UTC") if pd.Timestamp(r.at).tzinfo is None else pd.Timestamp(r.at).tz_convert("UTC"))
                        for r in connection.execute(query)]
        return out

    def latest(self) -> pd.Timestamp | None:
        """The newest row time of any stored event: how far the live pipeline reaches."""
        with self.engine.connect() as connection:
            at = connection.execute(sa.select(sa.func.max(EVENTS.c.at)).where(EVENTS.c.model_name == self.model_name)).scalar()
        return None if at is None else pd.Timestamp(at).tz_localize("UTC") if pd.Timestamp(at).tzinfo is None else pd.Timestamp(at).tz_convert("UTC")

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c.model_name == self.model_name)).scalar())


def _rows(events: list[Event], kind: str) -> pd.DataFrame:
    chosen = sorted((e for e in events if e.kind == kind), key=lambda e: (e.at, e.event_id))
    frame = pd.DataFrame([e.row for e in chosen])
    for col in TIMESTAMPS[kind]:
        if col in frame.columns:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return frame


def _records(given: pd.DataFrame | None, events: list[Event]) -> pd.DataFrame | None:
    """Opportunity records with the events' fields laid over, oldest change first: a field an
    event names takes its value (null empties it), the others keep the export's (or an earlier
    event's)."""
    sent = sorted((e for e in events if e.kind == OPPORTUNITIES), key=lambda e: (e.at, e.event_id))
    if not sent:
        return given
    records = {r["opportunity_id"]: r for r in (given.to_dict("records") if given is not None else [])}
    for e in sent:
        fields = {k: (pd.Timestamp(v).tz_convert("UTC") if pd.Timestamp(v).tzinfo else pd.Timestamp(v).tz_localize("UTC")) if k in TIMESTAMPS[OPPORTUNITIES] and v is not None else v
                  for k, v in e.row.items()}
        records[e.opportunity_id] = {**records.get(e.opportunity_id, {}), **fields}
    return pd.DataFrame(list(records.values()))


def overlay(tables: Tables | None, opportunity_id: str, events: list[Event]) -> dict[str, pd.DataFrame]:
    """The deal's rows of the served export (none without one) with its events laid over, as
    the CRM's next export would hold them: a frame per table."""
    base = tables.of_one(opportunity_id) if tables is not None else None
    frames: dict[str, pd.DataFrame] = {}
    for kind in KINDS:
        given = base.frame(kind) if base is not None else None
        if kind == OPPORTUNITIES:
            frame = _records(given, events)
        else:
            added = _rows(events, kind)
            parts = [f for f in (given, added) if f is not None and len(f)]
            frame = pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True) if parts else empty(kind)  # a row the export holds too (re-sent, or exported since): once
        frames[kind] = frame if frame is not None else empty(kind)
    if len(frames[FIELD_HISTORY]):
        frames[OPPORTUNITIES] = _current_values(frames[OPPORTUNITIES], frames[FIELD_HISTORY], _rows(events, FIELD_HISTORY))
    return frames


def live_tables(tables: Tables | None, opportunity_id: str, events: list[Event], stages: StageConfig, now: pd.Timestamp) -> Tables:
    """One deal's checked tables: LookupError when neither the export nor an event holds its
    record; ExportInvalid (located by the deal) when its rows break the contract together."""
    frames = overlay(tables, opportunity_id, events)
    if frames[OPPORTUNITIES].empty:
        raise LookupError(opportunity_id)
    columns = {kind: _columns(frames[kind], kind) for kind in KINDS}
    where = {kind: (lambda i, k=kind: f"opportunity {opportunity_id}: {k}[{i}]") for kind in KINDS}
    return validate_columns(columns, stages, now, where).tables


def _columns(frame: pd.DataFrame, kind: str) -> Columns:
    """A deal's rows as the contract's arrays (times int64 ns UTC, amount float, the rest
    objects with None), built column by column: a live score asks for one deal at a time."""
    out: Columns = {}
    for col in frame.columns:
        values = frame[col]
        if col in TIMESTAMPS[kind]:
            out[col] = ns(values)
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


def _current_values(opps: pd.DataFrame, fields: pd.DataFrame, sent: pd.DataFrame) -> pd.DataFrame:
    """A record's amount and close date follow a field-change event that is the newest change
    of that field (a change the export already held leaves the export's value)."""
    if sent.empty:
        return opps
    opps = opps.copy()
    for field in CURRENT:
        mine = fields[fields["field"] == field].sort_values("changed_at", kind="stable")
        newest = mine.groupby("opportunity_id").tail(1)
        newest = newest[newest.set_index(["opportunity_id", "changed_at", "value"]).index.isin(sent.set_index(["opportunity_id", "changed_at", "value"]).index)]
        if newest.empty:
            continue
        value = pd.Series(newest["value"].to_numpy(), index=newest["opportunity_id"].to_numpy())
        hit = opps["opportunity_id"].isin(value.index)
        if field == "amount":
            opps.loc[hit, field] = pd.to_numeric(opps.loc[hit, "opportunity_id"].map(value)).to_numpy()
        else:
            opps[field] = pd.to_datetime(opps[field], utc=True)
            opps.loc[hit, field] = pd.to_datetime(opps.loc[hit, "opportunity_id"].map(value), utc=True, format="ISO8601").to_numpy()
    return opps


def live_end(tables: Tables | None, latest: pd.Timestamp | None) -> pd.Timestamp | None:
    """'Now' for the live pipeline: the newest time of the export or of any event."""
    stamps = [t for t in (tables.end if tables is not None else None, latest) if t is not None]
    return max(stamps) if stamps else None



