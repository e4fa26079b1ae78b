"""A served export for the browser tests: the service on a free localhost port in this process,
with two scoring runs already in its score history, and Debian's Chromium driven by Playwright
(Playwright's own browser download is not reachable; `make test` installs the package)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.loading import write_export
from features.settings import SegmentConfig, Settings, settings_toml
from scoring.drift import of_run
from scoring.history import RunFacts, ScoreHistory
from scoring.score import score_open
from tests.faults.served import Served
from training.registry import log_and_register

KEY = "browser-key"
ARTIFACTS = Path(os.environ.get("OPPSCORE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = os.environ.get("OPPSCORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no Chromium: `make test` installs Debian's chromium package; or set OPPSCORE_CHROMIUM")
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory, medium, trained):
    """(url, settings): the medium export on the page, its champion, and score history holding
    runs every four weeks from 40 weeks before the export's end (their outcomes known: the
    track record), and 30 and 14 days before it (the change since the last run)."""
    from serving.app import create_app

    root = tmp_path_factory.mktemp("browser")
    data = root / "export"
    write_export(medium.tables, data)
    (data / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    settings = Settings(home=root / ".oppscore", champion_dir=root / "models" / "champion", segments=SegmentConfig(columns=medium.segments), api_keys=[KEY])
    log_and_register(trained, medium.tables, settings, "browser")
    history = ScoreHistory.of(settings)
    ids = medium.tables.opportunities["opportunity_id"].to_numpy()
    for days in (*range(280, 100, -28), 30, 14):
        at = medium.tables.end - pd.Timedelta(days=days)
        tally: dict = {}
        scored = score_open(trained.bundle, medium.tables, at, previous=history.previous(ids, at), drift_into=tally)
        history.record(scored, at, "1", "batch", RunFacts.of(trained.bundle, drift=of_run(trained.bundle, [tally])))
    with Served(create_app(settings, data=data)) as port:
        yield f"http://127.0.0.1:{port}", settings


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def replayed_only(tmp_path_factory, small):
    """(url, settings): the small export served with a champion trained on it and a score history
    that holds nothing but `oppscore replay`'s runs: what `make demo` shows on the first load."""
    from features.stages import StageOrder
    from serving.app import create_app
    from training import replay
    from training.pipeline import train

    root = tmp_path_factory.mktemp("replayed")
    data = root / "export"
    write_export(small.tables, data)
    (data / "oppscore.toml").write_text(settings_toml(small.stages, small.segments), encoding="utf-8")
    settings = Settings(home=root / ".oppscore", champion_dir=root / "models" / "champion", segments=SegmentConfig(columns=small.segments), api_keys=[KEY])
    stages = StageOrder(small.stages)
    log_and_register(train(small.tables, stages, settings), small.tables, settings, "browser replay")
    when = replay.dates(small.tables, stages, "month")[-4:]
    replay.replay(small.tables, stages, settings, ScoreHistory.of(settings), when, small.tables.end)
    with Served(create_app(settings, data=data)) as port:
        yield f"http://127.0.0.1:{port}", settings
