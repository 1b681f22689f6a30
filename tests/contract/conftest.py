"""One Dask LocalCluster for the whole session (2 worker processes, 1 thread each).

Each test connects its own asynchronous client (`DaskExecutor(address)`), so tests keep
their own event loops. The scheduler's `allowed-failures` is 0: a worker's death fails
the task it was running at once (as on the LocalCluster DaskExecutor starts itself).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            worker_dashboard_address=":0",
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so an unclosed socket or transport (a ResourceWarning,
    an error here) is blamed on the test that leaked it, not on a later one."""
    yield
    gc.collect()
