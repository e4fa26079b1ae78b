"""An app serving a registered champion from a private store; the key is 'test-key'."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient

from features.settings import SegmentConfig, Settings
from serving.app import create_app
from serving.schemas import EXAMPLE_OPPORTUNITY

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="session")
def served_store(tmp_path_factory, trained, medium):
    import os

    from training.registry import log_and_register

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("served")
    settings = Settings(
        home=root / ".oppscore", champion_dir=root / "models" / "champion",
        segments=SegmentConfig(columns=medium.segments), api_keys=[KEY],
    )
    settings.serving.max_batch = 50
    log_and_register(trained, medium.tables, settings, "api tests")
    return settings


@pytest.fixture()
def client(served_store):
    with TestClient(create_app(served_store, start_reloader=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def body():
    return {"as_of": "2026-09-30T00:00:00Z", "opportunities": [copy.deepcopy(EXAMPLE_OPPORTUNITY)]}
