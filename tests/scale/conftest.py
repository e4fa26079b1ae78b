import pytest

from engines.runner import EngineOptions, runner


@pytest.fixture(scope="session")
def dask_run():
    """A LocalCluster of two worker processes, shared by the scale tests of a test process."""
    with runner(EngineOptions("dask", workers=2, memory_limit="2GiB")) as run:
        yield run
