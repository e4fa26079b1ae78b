"""Model lifecycle: hot reload on a new champion, export fallback, no model at all."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.holder import ModelHolder
from tests.api.conftest import AUTH
from tests.conftest import weaker
from training.registry import log_and_register, promote


def test_new_champion_is_picked_up_without_restart(store, trained, medium, body) -> None:
    store = store.model_copy(update={"api_keys": ["test-key"]})
    log_and_register(trained, medium.tables, store, "t")
    holder = ModelHolder(store)
    with TestClient(create_app(store, holder=holder, start_reloader=False)) as client:
        assert client.get("/v1/model", headers=AUTH).json()["version"] == "1"
        in_flight = holder.current  # what a request that started now holds
        log_and_register(weaker(trained), medium.tables, store, "t")
        promote(store, "2")
        assert holder.refresh() is True
        assert client.get("/v1/model", headers=AUTH).json()["version"] == "2"
        assert client.post("/v1/score", json=body, headers=AUTH).json()["model_version"] == "2"
        assert in_flight.version == "1" and in_flight.bundle.models["win"].kind == trained.bundle.models["win"].kind  # untouched by the swap
        assert holder.current.bundle.models["win"].note == "a constant, for tests"
        assert holder.refresh() is False  # nothing new


def test_unreachable_registry_at_start_serves_the_export(store, trained, medium, body) -> None:
    log_and_register(trained, medium.tables, store, "t")
    away = store.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9", "api_keys": ["test-key"]})
    with TestClient(create_app(away, start_reloader=False)) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["source"] == "export" and "exported bundle" in ready["detail"]
        model = client.get("/v1/model", headers=AUTH).json()
        assert model["source"] == "export" and model["version"] == "1" and "exported bundle" in model["note"]
        assert client.post("/v1/score", json=body, headers=AUTH).status_code == 200


def test_no_model_at_all_is_503(store, body) -> None:
    empty = store.model_copy(update={"api_keys": ["test-key"]})
    with TestClient(create_app(empty, start_reloader=False)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "no model" in r.json()["detail"]
        s = client.post("/v1/score", json=body, headers=AUTH)
        assert s.status_code == 503 and "oppscore train" in s.json()["detail"]
        assert client.get("/healthz").status_code == 200
    assert not (store.home / "mlflow.db").exists()  # serving reads a registry, never creates one


def test_a_registry_that_never_answers_does_not_hold_up_liveness(store, trained, medium) -> None:
    """The registry accepts connections and never answers: /healthz is up at once, /readyz says
    not ready, and the exported bundle serves once the registry call has timed out."""
    import socket
    import time

    log_and_register(trained, medium.tables, store, "t")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: requests hang until the client's timeout
    port = silent.getsockname()[1]
    away = store.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{port}", "api_keys": ["test-key"]})
    try:
        start = time.perf_counter()
        with TestClient(create_app(away, start_reloader=True)) as client:
            assert client.get("/healthz").status_code == 200
            assert time.perf_counter() - start < 2.0
            deadline = time.time() + 30
            while time.time() < deadline and client.get("/readyz").status_code != 200:
                time.sleep(0.2)
            ready = client.get("/readyz").json()
            assert ready["status"] == "ready" and ready["source"] == "export"
    finally:
        silent.close()


def test_workers_converge_on_the_champion_within_one_poll_once_the_registry_is_back(store, trained, medium) -> None:
    """The SQLite registry moved away while the export is a version behind (a kill between
    export and alias, before any restart reconciled them): every worker serves the export and
    creates no empty registry; the file back, each worker's next poll serves the champion."""
    from scoring.store import export_version, load_version

    log_and_register(trained, medium.tables, store, "t")
    log_and_register(weaker(trained), medium.tables, store, "t")
    promote(store, "2")
    export_version(store, load_version(store, "1"))  # the export a version behind the alias
    db = store.home / "mlflow.db"
    db.rename(store.home / "away.db")
    workers = [ModelHolder(store) for _ in range(2)]
    assert [w.load().loaded.version for w in workers] == ["1", "1"]
    assert all(w.current.source == "export" for w in workers)
    assert not db.exists()  # serving never creates a registry in the missing one's place
    (store.home / "away.db").rename(db)
    assert [w.refresh() for w in workers] == [True, True]
    assert [(w.current.version, w.current.source) for w in workers] == [("2", "registry")] * 2


def test_readyz_says_loading_while_the_registry_is_still_asked_not_that_it_failed(store, trained, medium) -> None:
    """The first load serves the exported bundle at once, then asks the registry; until it has
    an answer, /readyz says it is loading (it said "registry unreachable" for 20 s before)."""
    import threading
    import time

    log_and_register(trained, medium.tables, store, "t")
    asked, answer = threading.Event(), threading.Event()

    class SlowRegistry(ModelHolder):
        def _reconcile(self) -> None:  # the registry takes its time to answer
            asked.set()
            answer.wait(30)

    holder = SlowRegistry(store)
    with TestClient(create_app(store, holder=holder, start_reloader=True)) as client:  # loaded in the background, as `serve` does
        assert asked.wait(30)
        during = client.get("/readyz").json()
        answer.set()
        deadline = time.monotonic() + 30
        while (after := client.get("/readyz").json()).get("source") != "registry" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert during["status"] == "ready" and during["source"] == "export" and during["detail"].startswith("loading:")
    assert after == {"status": "ready", "model_version": "1", "source": "registry"}
