"""POST /v1/events and GET /v1/opportunities/{id}: events stored once per id in any order, a
deal's score by id following them at once, and point-in-time parity: the score from the
served export with events laid over equals the batch score of the export that holds those
rows (1e-9)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.loading import write_export
from features.settings import settings_toml
from features.tables import Tables
from scoring.score import score_open
from serving.app import create_app
from tests.api.conftest import AUTH

N_EVENTS = 10_000


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()} for r in rows]


def _split(tables: Tables, seed: int):
    """The export served (rows held back) and the events that bring it to the whole export:
    three deals that are new (record and every row), then stage entries and activities after a
    cut for the others, the first 10,000 of these events (the rest stay in the export)."""
    rng = np.random.default_rng(seed)
    opps, hist, acts, fields = tables.opportunities, tables.stage_history, tables.activities, tables.field_history
    cut = tables.end - pd.Timedelta(days=240)
    created_late = opps.loc[opps["created_at"] > cut, "opportunity_id"].to_numpy()
    new = set(rng.choice(created_late, 3, replace=False))
    events: list[dict] = []
    for r in _json_rows(opps[opps["opportunity_id"].isin(new)]):
        events.append({"event_id": f"o-{r['opportunity_id']}", "table": "opportunities", "changed_at": r["created_at"], "row": r})
    first = ~hist["opportunity_id"].duplicated()  # a deal of the export keeps its first stage (the contract wants one)
    held = {"stage_history": hist["opportunity_id"].isin(new) | ((hist["entered_at"] > cut) & ~first),
            "activities": acts["opportunity_id"].isin(new) | (acts["occurred_at"] > cut),
            "field_history": fields["opportunity_id"].isin(new)}
    others: list[dict] = []
    for name, frame in (("stage_history", hist), ("field_history", fields), ("activities", acts)):
        for i, r in zip(np.flatnonzero(held[name].to_numpy()), _json_rows(frame[held[name]]), strict=True):
            (events if r["opportunity_id"] in new else others).append({"event_id": f"{name[0]}-{i}", "table": name, "row": r})
    events = (events + others)[:N_EVENTS]  # every row of the new deals among them
    sent = {name: {int(e["event_id"].split("-")[1]) for e in events if e["table"] == name} for name in held}
    keep = {name: ~frame.index.isin(list(sent[name])) for name, frame in (("stage_history", hist), ("activities", acts), ("field_history", fields))}
    served = Tables(opps[~opps["opportunity_id"].isin(new)], hist[keep["stage_history"]], acts[keep["activities"]], fields[keep["field_history"]])
    sent_ids = {e["row"]["opportunity_id"] for e in events}
    return served, tables, events, sorted(sent_ids), sorted(new)


@pytest.fixture()
def live(served_store, tmp_path, medium, seed):
    served, whole, events, touched, new = _split(medium.tables, seed)
    folder = tmp_path / "export"
    write_export(served, folder)
    (folder / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    settings = served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'live.db'}"})
    with TestClient(create_app(settings, data=folder, start_reloader=False), raise_server_exceptions=False) as client:
        yield client, served, whole, events, touched, new


def _post(client, events) -> dict:
    r = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200, r.text[:2000]
    return r.json()


def test_scores_from_events_equal_the_batch_scores_of_the_whole_export(live, trained, seed) -> None:
    client, served, whole, events, touched, new = live
    assert len(events) == N_EVENTS
    rng = random.Random(seed)
    shuffled = events[:]
    rng.shuffle(shuffled)
    first = _post(client, shuffled)
    assert (first["accepted"], first["duplicates"], first["stored"]) == (N_EVENTS, 0, N_EVENTS)
    again = events[:]
    rng.shuffle(again)
    for half in (again[: N_EVENTS // 2], again[N_EVENTS // 2:]):  # the same events again, in another order: nothing changes
        assert _post(client, half)["accepted"] == 0
    assert client.post("/v1/events", json={"events": again[:1]}, headers=AUTH).json()["stored"] == N_EVENTS

    end = whole.end
    batch = score_open(trained.bundle, whole, end).set_index("opportunity_id")
    still_open = [i for i in touched if i in batch.index and i not in new]
    checked = [*new, *still_open[:50], *[i for i in touched if i not in batch.index and i not in new][:10]]
    compared = 0
    for oid in checked:
        r = client.get(f"/v1/opportunities/{oid}", headers=AUTH)
        assert r.status_code == 200, r.text
        got = r.json()
        assert pd.Timestamp(got["as_of"]) == end and got["events"] > 0
        if oid not in batch.index:
            assert got["status"] != "open" and got["win_probability"] is None
            continue
        want = batch.loc[oid]
        assert got["status"] == "open" and got["stage"] == want["stage"]
        assert got["win_probability"] == pytest.approx(want["win_probability"], abs=1e-9)
        assert got["stall_risk"] == pytest.approx(want["stall_risk"], abs=1e-9)
        assert [f["feature"] for f in got["top_factors"]] == [f["feature"] for f in want["top_factors"]]
        compared += 1
    assert compared >= 20, compared
    assert any(batch.index.isin(new))  # a new deal, known only from events, is scored


def test_a_deal_without_events_answers_from_the_served_export(live, trained) -> None:
    client, served, *_ = live
    scored = score_open(trained.bundle, served, served.end)
    oid = scored["opportunity_id"].iloc[0]
    r = client.get(f"/v1/opportunities/{oid}", headers=AUTH)
    assert r.status_code == 200 and r.json()["events"] == 0
    assert r.json()["win_probability"] == pytest.approx(scored["win_probability"].iloc[0], abs=1e-12)
    assert pd.Timestamp(r.json()["as_of"]) == served.end


def test_a_resent_id_with_other_content_is_refused_whole(live) -> None:
    client, _, _, events, *_ = live
    _post(client, events[:10])
    changed = [dict(events[10]), {**events[3], "row": {**events[3]["row"], **({"stage": "Proposal"} if events[3]["table"] == "stage_history" else {"amount": 1.0})}}]
    r = client.post("/v1/events", json={"events": changed}, headers=AUTH)
    assert r.status_code == 409 and events[3]["event_id"] in r.json()["detail"]
    assert _post(client, events[10:11])["stored"] == 11  # the conflicting batch stored nothing, its other event included


def test_malformed_events_are_named_and_unknown_ids_are_404(live) -> None:
    client, *_ = live
    bad = [
        {"event_id": "a", "table": "stage_history", "row": {"opportunity_id": "X", "stage": "Proposal"}},
        {"event_id": "b", "table": "activities", "row": {"opportunity_id": "X", "occurred_at": "2250-01-01T00:00:00Z", "type": "call"}},
        {"event_id": "c", "table": "calls", "row": {}},
        {"event_id": "d", "table": "field_history", "row": {"opportunity_id": "X", "field": "amount", "value": "lots", "changed_at": "2026-01-01T00:00:00Z"}},
    ]
    for event, where in zip(bad, (["row", "entered_at"], ["row", "occurred_at"], [], ["row"]), strict=True):
        r = client.post("/v1/events", json={"events": [event]}, headers=AUTH)
        assert r.status_code == 422, r.text
        locs = [p["loc"] for p in r.json()["detail"]]
        assert any(loc[:3] == ["body", "events", 0] and all(w in loc for w in where) for loc in locs), locs
    r = client.get("/v1/opportunities/NOPE-1", headers=AUTH)
    assert r.status_code == 404 and "'NOPE-1'" in r.json()["detail"]
    _post(client, [{"event_id": "s-1", "table": "stage_history", "row": {"opportunity_id": "ONLY-STAGES", "stage": "Prospecting", "entered_at": "2026-09-01T00:00:00Z"}}])
    r = client.get("/v1/opportunities/ONLY-STAGES", headers=AUTH)
    assert r.status_code == 404 and "no opportunities record" in r.json()["detail"]
    assert client.get("/v1/opportunities/NOPE-1").status_code == 401
    assert client.post("/v1/events", json={"events": []}, headers=AUTH).status_code == 422


def test_a_score_by_id_says_what_changed_since_the_last_recorded_run(served_store, tmp_path, medium, trained) -> None:
    from scoring.history import RunFacts, ScoreHistory

    folder = tmp_path / "export"
    write_export(medium.tables, folder)
    (folder / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    settings = served_store.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'live.db'}"})
    earlier = medium.tables.end - pd.Timedelta(days=14)
    before = score_open(trained.bundle, medium.tables, earlier, previous=ScoreHistory.of(settings).previous([], earlier))
    ScoreHistory.of(settings).record(before, earlier, "1", "batch", RunFacts.of(trained.bundle))
    now = score_open(trained.bundle, medium.tables, medium.tables.end)
    oid = next(i for i in now["opportunity_id"] if i in set(before["opportunity_id"]))
    with TestClient(create_app(settings, data=folder, start_reloader=False), raise_server_exceptions=False) as client:
        got = client.get(f"/v1/opportunities/{oid}", headers=AUTH).json()
    was = int(before.set_index("opportunity_id").loc[oid, "score"])
    assert got["previous_score"] == was and got["score_change"] == got["score"] - was and got["why_changed"] is not None
