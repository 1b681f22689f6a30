"""DaskExecutor beyond the contract: the three ways to point it at a cluster, what it
reports, scatter, and a worker killed mid-task (WorkerCrashed, or a retry)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import contract_funcs as f
import pytest
from contract_support import descendants, leaked, wait_for_file

from qtasks_mp.asyncio import QueueTasks

pytest.importorskip("distributed")

from distributed import Client

from qtasks_mp.executors.dask import DaskExecutor


def make_app(executor: DaskExecutor) -> QueueTasks:
    app = QueueTasks("dask-test", executors={"dask": executor})
    app.config.shutdown_timeout = 5.0
    return app


async def test_owns_a_local_cluster_and_closes_it() -> None:
    before = descendants()
    executor = DaskExecutor(n_workers=1, cluster_kwargs={"dashboard_address": ":0"})
    app = make_app(executor)
    app.task(name="add", executor="dask")(f.add)
    async with app:
        assert executor.cluster is not None
        assert len(descendants() - before) >= 1  # its worker process
        done = await app.add_task("add", 20, 22, timeout=10)
        assert done is not None and done.returning == 42
        stats = app.stats()["executors"]["dask"]
        assert stats["workers"] == 1 and stats["threads"] == 1
        assert stats["slots"] == 2  # threads x slots_per_thread
        assert stats["scheduler"].startswith("tcp://")
        assert stats["dashboard"] is None or stats["dashboard"].startswith("http")
        assert stats["calls_done"] == 1
    assert executor.cluster is None and executor.client is None
    assert leaked(before) == []


async def test_an_asynchronous_client_is_used_and_left_open(dask_cluster: Any) -> None:
    client: Any = await Client(dask_cluster.scheduler_address, asynchronous=True)  # type: ignore[no-untyped-call]
    try:
        executor = DaskExecutor(client=client)
        app = make_app(executor)
        app.task(name="add", executor="dask")(f.add)
        async with app:
            assert executor.client is not None and id(executor.client) == id(client)
            done = await app.add_task("add", 1, 2, timeout=10)
            assert done is not None and done.returning == 3
        assert client.status == "running"
        assert await client.submit(f.add, 3, 4) == 7
    finally:
        await client.close()


async def test_a_synchronous_client_lends_its_scheduler(dask_cluster: Any) -> None:
    client = await asyncio.to_thread(Client, dask_cluster.scheduler_address)
    try:
        executor = DaskExecutor(client=client)
        app = make_app(executor)
        app.task(name="add", executor="dask")(f.add)
        async with app:
            assert executor.client is not client and executor.client is not None
            done = await app.add_task("add", 1, 2, timeout=10)
            assert done is not None and done.returning == 3
        assert await asyncio.to_thread(lambda: client.submit(f.add, 3, 4).result()) == 7
    finally:
        await asyncio.to_thread(client.close)


def test_contradictory_options_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskExecutor("tcp://127.0.0.1:8786", client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not ours to size"):
        DaskExecutor("tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(ValueError, match="slots_per_thread"):
        DaskExecutor(slots_per_thread=0)


async def test_large_arguments_are_scattered(dask_cluster: Any) -> None:
    executor = DaskExecutor(dask_cluster.scheduler_address)
    app = make_app(executor)
    app.task(name="length", executor="dask")(f.length)
    async with app:
        assert executor.slots == 4  # 2 workers x 1 thread x 2
        done = await app.add_task("length", b"s" * 100, timeout=10)
        assert done is not None and done.returning == 100
        assert executor.scattered == 0
        done = await app.add_task("length", data=bytearray(3 << 20), timeout=10)
        assert done is not None and done.returning == 3 << 20
        assert executor.scattered == 1


async def test_an_unstarted_executor_says_so() -> None:
    executor = DaskExecutor("tcp://127.0.0.1:1")
    assert executor.stats()["workers"] == 0
    assert executor.slots == 2


async def _kill_worker_running(client: Client, started: Path) -> int:
    """SIGKILL the Dask worker process running the task that wrote `started`."""
    pid = int(await wait_for_file(started))
    assert client.scheduler is not None
    identity = await client.scheduler.identity(n_workers=-1)
    pids = await client.run(os.getpid)
    assert set(pids) == set(identity["workers"])
    assert pid in pids.values(), "the task did not run in one of the cluster's workers"
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("retry", [0, 1])
async def test_a_killed_worker_fails_or_retries_its_call(
    dask_cluster: Any, tmp_path: Path, retry: int
) -> None:
    executor = DaskExecutor(dask_cluster.scheduler_address)
    app = make_app(executor)
    app.task(name="die_once", executor="dask", retry=retry)(f.die_once)
    app.task(name="add", executor="dask")(f.add)
    killed: list[int] = []
    try:
        async with app:
            assert executor.client is not None
            task = await app.add_task("die_once", str(tmp_path / "n"), str(tmp_path / "pid"))
            assert task is not None
            killed.append(await _kill_worker_running(executor.client, tmp_path / "pid"))
            done = await app.wait(task.uuid, timeout=15)
            assert done is not None
            if retry:
                assert done.status == "success", done.traceback
                assert done.returning == "attempt 2" and done.retry == 1
            else:
                assert done.status == "error"
                assert done.traceback is not None
                assert "WorkerCrashed" in done.traceback
                assert "the Dask worker running task 'die_once' died" in done.traceback
            assert executor.crashes == 1
            # The app keeps working on the worker that is left (and the restarted one).
            after = await app.add_task("add", 2, 2, timeout=10)
            assert after is not None and after.returning == 4
    finally:
        # The nanny restarts the killed worker: wait for that, so later tests see 2 workers.
        await _two_healthy_workers(dask_cluster.scheduler_address, killed)


async def _two_healthy_workers(address: str, killed: list[int], timeout_s: float = 15) -> None:
    async with Client(address, asynchronous=True) as client:  # type: ignore[no-untyped-call]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            pids = await client.run(os.getpid)
            if len(pids) == 2 and not set(pids.values()) & set(killed):
                return
            assert asyncio.get_running_loop().time() < deadline, f"workers now: {pids}"
            await asyncio.sleep(0.05)
