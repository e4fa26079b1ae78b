"""The live path under ordinary concurrency (issue 39), on SQLite and PostgreSQL: first requests
at once never half-migrate the database, and the same events sent twice by several clients at
once are stored once, never taken for a dead database."""

from __future__ import annotations

import random
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

from scoring.score import score_open
from serving.app import create_app
from tests.api.conftest import AUTH
from tests.api.test_events_and_ids import _split
from tests.faults.live import at_once, export_folder, fresh_database, post_events, revision_of, tables_of
from tests.faults.served import Served

HEAD = "0005"
TABLES = {"scores", "runs", "forecasts", "events", "oppscore_schema_version"}
KINDS = ["sqlite", "postgresql"]


@pytest.fixture(params=KINDS)
def fresh(request, tmp_path):
    """A database URL nothing has touched yet, of each kind."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return fresh_database(request.param, tmp_path, postgres)


def _event(k: int) -> dict:
    return {"event_id": f"first-{k}", "table": "activities", "row": {"opportunity_id": f"N-{k}", "occurred_at": "2026-09-01T00:00:00Z", "type": "call"}}


def test_sixteen_first_requests_on_a_fresh_home_and_after_a_restart(served_store, fresh) -> None:
    """8 clients at once on a fresh home used to answer 2 × 500 and 6 × 503 and leave `scores`
    with an empty version table (every later event 503 until the file was deleted); after a
    restart 2-3 of 8 answered 500. Now: no 5xx, the schema whole, at its head revision."""
    settings = served_store.model_copy(update={"database_url": fresh})
    for start in ("fresh", "restart"):
        with Served(create_app(settings, start_reloader=False)) as port:
            base = f"http://127.0.0.1:{port}"
            offset = 0 if start == "fresh" else 16
            answers = at_once([lambda k=k, base=base, offset=offset: post_events(base, [_event(offset + k)]) for k in range(16)], workers=16)
            total = httpx.get(f"{base}/v1/opportunities/N-{offset}", headers=AUTH, timeout=30)
        assert [a.status_code for a in answers] == [200] * 16, [(a.status_code, a.text[:200]) for a in answers if a.status_code != 200]
        assert total.status_code == 404  # activities only, no record yet: not found, and said why
        assert TABLES <= tables_of(fresh) and revision_of(fresh) == HEAD
        assert max(a.json()["stored"] for a in answers) == offset + 16


def test_processes_that_start_at_once_migrate_once(fresh, tmp_path) -> None:
    """Four `oppscore db upgrade` at the same moment on a database nothing has made: each one
    waits for the one that migrates (a lock that holds across processes), all end at the head."""
    env = {"OPPSCORE_DATABASE_URL": fresh, "OPPSCORE_HOME": str(tmp_path / "home"), "PATH": ""}
    import os

    procs = [subprocess.Popen([sys.executable, "-m", "oppscore.cli", "db", "upgrade"], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert all(f"schema at revision {HEAD}" in o for o in outputs), outputs
    assert TABLES <= tables_of(fresh) and revision_of(fresh) == HEAD


N_EVENTS = 5_000
BATCH = 50


def test_the_same_events_twice_shuffled_by_eight_clients(served_store, fresh, tmp_path, medium, trained, seed) -> None:
    """The same 5,000 events sent twice, shuffled, by 8 clients at once: a duplicate's clash used
    to be taken for a dead database (everyone 503 for 60 s; 191 of 200 batches through). Now
    every batch is 2xx, each id is stored once, and a deal's score by id equals the batch score
    of the export that holds its rows."""
    served, whole, everything, touched, new = _split(medium.tables, seed)
    events, unsent = everything[:N_EVENTS], everything[N_EVENTS:]
    folder = export_folder(served, medium.stages, medium.segments, tmp_path / "export")
    settings = served_store.model_copy(update={"database_url": fresh})
    rng = random.Random(seed)
    sent = events + events
    rng.shuffle(sent)
    batches = [sent[i:i + BATCH] for i in range(0, len(sent), BATCH)]
    with Served(create_app(settings, data=folder, start_reloader=False)) as port:
        base = f"http://127.0.0.1:{port}"
        answers = at_once([lambda b=b: post_events(base, b) for b in batches], workers=8)
        statuses = [a.status_code for a in answers]
        assert statuses == [200] * len(batches), [(a.status_code, a.text[:300]) for a in answers if a.status_code != 200][:5]
        assert sum(a.json()["accepted"] for a in answers) == len({e["event_id"] for e in events})
        assert sum(a.json()["duplicates"] for a in answers) == len(sent) - len({e["event_id"] for e in events})
        holding = _holding(whole, unsent)
        sent_deals = {e["row"]["opportunity_id"] for e in events}
        batch = score_open(trained.bundle, holding, holding.end).set_index("opportunity_id")  # the live end: the newest time of the export or of any event
        checked = [oid for oid in sorted(sent_deals) if oid in batch.index][:40]
        got = {oid: httpx.get(f"{base}/v1/opportunities/{oid}", headers=AUTH, timeout=60) for oid in checked}
    stored = pd.read_sql("SELECT event_id FROM events", fresh)
    assert stored["event_id"].is_unique and len(stored) == len({e["event_id"] for e in events})
    assert len(checked) >= 20
    for oid, r in got.items():
        assert r.status_code == 200, r.text
        assert pd.Timestamp(r.json()["as_of"]) == holding.end
        assert r.json()["win_probability"] == pytest.approx(batch.loc[oid, "win_probability"], abs=1e-9), oid
        assert r.json()["stall_risk"] == pytest.approx(batch.loc[oid, "stall_risk"], abs=1e-9), oid


def _holding(whole, unsent: list[dict]):
    """The export that holds what the service holds: the whole export less the rows of the
    events not sent (`_split` names each event by its row's position in the whole export)."""
    from features.tables import Tables

    parts = []
    for name in ("stage_history", "activities", "field_history"):
        frame = getattr(whole, name)
        gone = [int(e["event_id"].split("-")[1]) for e in unsent if e["table"] == name]
        parts.append(frame[~np.isin(np.arange(len(frame)), gone)])
    records = {e["row"]["opportunity_id"] for e in unsent if e["table"] == "opportunities"}
    return Tables(whole.opportunities[~whole.opportunities["opportunity_id"].isin(records)], *parts)
