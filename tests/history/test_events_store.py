"""The events' store and the overlay: stored once per event id on SQLite and PostgreSQL, a
conflicting resend refused whole; rows laid over the export in any arrival order give the
same tables; a field change moves the record's current value only when it is the newest."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from scoring.events import Event, EventConflict, EventStore, overlay

T = pd.Timestamp("2026-09-01T00:00:00Z")


def _events() -> list[Event]:
    rec = {"opportunity_id": "N-1", "created_at": T.isoformat(), "amount": 100.0, "team": "Alpha"}
    return [
        Event("o1", "opportunities", rec, T),
        Event("o2", "opportunities", {"opportunity_id": "N-1", "team": "Beta", "region": "north"}, T + pd.Timedelta(days=3)),
        Event("o3", "opportunities", {"opportunity_id": "N-1", "team": None}, T + pd.Timedelta(days=1)),  # older than o2: o2 stands
        Event("s1", "stage_history", {"opportunity_id": "N-1", "stage": "Prospecting", "entered_at": T.isoformat()}, T),
        Event("s2", "stage_history", {"opportunity_id": "N-1", "stage": "Proposal", "entered_at": (T + pd.Timedelta(days=4)).isoformat()}, T + pd.Timedelta(days=4)),
        Event("f1", "field_history", {"opportunity_id": "N-1", "field": "amount", "value": "250.0", "changed_at": (T + pd.Timedelta(days=5)).isoformat()}, T + pd.Timedelta(days=5)),
        Event("f2", "field_history", {"opportunity_id": "N-1", "field": "amount", "value": "180.0", "changed_at": (T + pd.Timedelta(days=2)).isoformat()}, T + pd.Timedelta(days=2)),
    ]


def test_any_arrival_order_gives_the_same_tables() -> None:
    events = _events()
    first, _ = overlay(None, ["N-1"], events)
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        again, _ = overlay(None, ["N-1"], shuffled)
        for name, frame in first.items():
            pd.testing.assert_frame_equal(frame.reset_index(drop=True), again[name].reset_index(drop=True))
    record = first["opportunities"].iloc[0]
    assert record["team"] == "Beta" and record["region"] == "north"  # the latest change of the record stands, fields it does not name stay
    assert record["amount"] == 250.0  # the newest amount change (day 5), not the last to arrive
    assert list(first["stage_history"]["stage"]) == ["Prospecting", "Proposal"]


def _store_checks(store: EventStore) -> None:
    events = _events()
    assert store.add(events, T).accepted == len(events)
    again = store.add(list(reversed(events)), T)
    assert (again.accepted, again.duplicates) == (0, len(events))
    with pytest.raises(EventConflict, match="s2"):
        store.add([Event("new-1", "activities", {"opportunity_id": "N-1", "occurred_at": T.isoformat(), "type": "call"}, T),
                   Event("s2", "stage_history", {"opportunity_id": "N-1", "stage": "Negotiation", "entered_at": T.isoformat()}, T)], T)
    assert store.count() == len(events)  # the conflicting batch stored nothing
    assert {e.event_id for e in store.of_deals(["N-1"])} == {e.event_id for e in events}
    assert store.latest(T + pd.Timedelta(days=30)) == T + pd.Timedelta(days=5)
    assert store.latest(T + pd.Timedelta(days=3, hours=12)) == T + pd.Timedelta(days=3)  # events after `until` are not yet
    assert EventStore(store.engine.url.render_as_string(hide_password=False), "another-project").count() == 0


def test_the_store_on_sqlite(tmp_path) -> None:
    _store_checks(EventStore(f"sqlite:///{tmp_path / 'events.db'}", "oppscore"))


def test_the_store_on_postgresql(postgres_url) -> None:
    _store_checks(EventStore(postgres_url, f"events-{random.randrange(10**9)}"))


def _race_checks(store: EventStore) -> None:
    """A writer of the same deal that lands between this batch's check and its write: only the
    deal it changed is read and checked again (with its new event), and the batch is stored
    once; a deal nobody changed is not checked twice."""
    rec = {"opportunity_id": "R-1", "created_at": T.isoformat(), "amount": 1.0}
    other = {"opportunity_id": "R-2", "created_at": T.isoformat(), "amount": 2.0}
    assert store.add([Event("r1", "opportunities", rec, T), Event("r2", "opportunities", other, T)], T).accepted == 2
    seen: list[tuple[set[str], set[str]]] = []

    def check(stored: list[Event], changing: list[Event]) -> None:
        seen.append(({e.event_id for e in stored}, {e.event_id for e in changing}))
        if len(seen) == 1:  # while this batch is checked, another writer's call on R-1 lands
            store.add([Event("late", "activities", {"opportunity_id": "R-1", "occurred_at": T.isoformat(), "type": "call"}, T)], T)

    batch = [Event("a1", "activities", {"opportunity_id": "R-1", "occurred_at": T.isoformat(), "type": "email"}, T),
             Event("a2", "activities", {"opportunity_id": "R-2", "occurred_at": T.isoformat(), "type": "email"}, T)]
    assert store.add(batch, T, check).accepted == 2
    assert seen == [({"r1", "r2"}, {"a1", "a2"}), ({"r1", "late"}, {"a1"})]
    assert {e.event_id for e in store.of_deals(["R-1", "R-2"])} == {"r1", "r2", "late", "a1", "a2"}
    assert store.count() == 5


def test_a_write_that_lands_meanwhile_is_checked_again_on_sqlite(tmp_path) -> None:
    _race_checks(EventStore(f"sqlite:///{tmp_path / 'events.db'}", "oppscore"))


def test_a_write_that_lands_meanwhile_is_checked_again_on_postgresql(postgres_url) -> None:
    _race_checks(EventStore(postgres_url, f"race-{random.randrange(10**9)}"))
