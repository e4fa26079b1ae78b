"""Small shared fixtures: a 300-opportunity export with known signal, written and in memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see the Makefile's test target
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # tests point at dead registries on purpose
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"

from features.loading import write_export  # noqa: E402
from features.settings import settings_toml  # noqa: E402
from features.synthetic import Generated, generate  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MAVEN = SHARED / "datasets" / "maven-crm"


@pytest.fixture(scope="session")
def seed() -> int:
    """The seed of randomised tests: OPPSCORE_TEST_SEED, default 0. They must pass for any seed;
    run the suite with another value to check (scikit-learn's global_random_seed, smaller)."""
    return int(os.environ.get("OPPSCORE_TEST_SEED", "0"))


@pytest.fixture(scope="session")
def small() -> Generated:
    return generate(n=300, seed=7)


@pytest.fixture()
def export_dir(small: Generated, tmp_path: Path) -> Path:
    """A fresh copy on disk for each test, so a test may corrupt it."""
    folder = tmp_path / "export"
    write_export(small.tables, folder)
    (folder / "oppscore.toml").write_text(settings_toml(small.stages, small.segments), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def medium() -> Generated:
    """Large enough to train on: about 2,500 deals over two years."""
    return generate(n=2500, seed=11)


@pytest.fixture(scope="session")
def trained(medium: Generated):
    from features.settings import SegmentConfig, Settings
    from features.stages import StageOrder
    from training.pipeline import train

    settings = Settings(segments=SegmentConfig(columns=medium.segments))
    return train(medium.tables, StageOrder(medium.stages), settings)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch, medium: Generated):
    """Settings with a private MLflow store and export folder under tmp_path."""
    from features.settings import SegmentConfig, Settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Settings(
        home=tmp_path / ".oppscore",
        champion_dir=tmp_path / "models" / "champion",
        segments=SegmentConfig(columns=medium.segments),
    )


def weaker(result):
    """The same run with both targets served by one constant rate: a challenger that must lose
    to its own run, made without training again (training is the slow part of the suite)."""
    import copy
    import dataclasses

    import numpy as np

    from scoring.bundle import TargetModel
    from scoring.calibrators import Identity
    from scoring.models import RateModel

    bundle = copy.copy(result.bundle)
    bundle.metadata = copy.deepcopy(result.bundle.metadata)
    spec = bundle.spec
    held = result.held_out
    ours, models = {}, {}
    for target in ("win", "stall"):
        w = held.w[target]
        rate = float(np.average(held.y[target], weights=w)) if w.sum() > 0 else 0.3
        levels = len(spec.categories["stage"])
        models[target] = TargetModel(RateModel(spec.columns.index("stage"), [rate] * levels, rate, {}), Identity(), "a constant, for tests")
        ours[target] = np.full(len(held.points), rate)
    bundle.models = models
    return dataclasses.replace(result, bundle=bundle, held_out=dataclasses.replace(held, ours=ours))


def older(result, days: int):
    """The same run as if its data had ended `days` earlier (another export): the gate then
    compares a challenger with it on the backtest points after that date."""
    import copy
    import dataclasses

    import pandas as pd

    bundle = copy.copy(result.bundle)
    bundle.metadata = copy.deepcopy(result.bundle.metadata)
    bundle.metadata["data_end"] = str(pd.Timestamp(bundle.metadata["data_end"]) - pd.Timedelta(days=days))
    bundle.metadata["data_fingerprint"] = f"older by {days} days"
    return dataclasses.replace(result, bundle=bundle)


from tests.postgres import postgres_url  # noqa: E402, F401 - a session fixture for every folder

# What `make test-fast` leaves out (`-m "not slow"`), besides the tests marked one by one: the
# suites that start processes, servers, clusters or a browser, or train many real models. The
# rest (contract, features, analytics, in-process API, CRM files, history, small models) is the
# loop to run while changing code; `make test` runs everything.
SLOW_SUITES = ("tests/e2e/", "tests/scale/", "tests/browser/", "tests/faults/", "notebooks/",
               "tests/models/test_registry.py", "tests/models/test_small_pipelines.py", "tests/models/test_replay.py",
               "tests/api/test_fuzz.py", "tests/api/test_lifecycle.py")


def pytest_collection_modifyitems(config, items) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).resolve().relative_to(root).as_posix() if Path(str(item.path)).resolve().is_relative_to(root) else ""
        if where.startswith(SLOW_SUITES):
            item.add_marker(pytest.mark.slow)
