"""app.map: one task per item, or one per chunk; results in order; errors early and named."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from procfuncs import square

from qtasks_mp import ProcessExecutor, TaskArgumentsError, TaskFailed
from qtasks_mp.asyncio import QueueTasks


@pytest.fixture
async def proc_app() -> AsyncIterator[QueueTasks]:
    app = QueueTasks(executors={"process": ProcessExecutor(max_workers=2, autoscale=False)})
    app.task(name="square", executor="process")(square)
    async with app:
        yield app


@pytest.mark.parametrize("chunksize", [1, 7, 64])
async def test_results_come_back_in_order(proc_app: QueueTasks, chunksize: int) -> None:
    got = await proc_app.map("square", range(200), chunksize=chunksize, timeout=30)
    assert got == [x * x for x in range(200)]


async def test_chunks_are_tasks_of_a_companion_task(proc_app: QueueTasks) -> None:
    await proc_app.map("square", range(100), chunksize=25, timeout=30)
    assert proc_app.stats()["tasks"]["square.map"]["ok"] == 4  # four chunks, four tasks
    assert "square" not in proc_app.stats()["tasks"]  # no per-item tasks


async def test_a_failed_item_raises_task_failed_with_the_worker_traceback(
    proc_app: QueueTasks,
) -> None:
    with pytest.raises(TaskFailed, match="negative one is not welcome") as info:
        await proc_app.map("square", [1, -1, 2], chunksize=2, timeout=30)
    assert "procfuncs.py" in (info.value.traceback or "")


async def test_items_are_checked_before_anything_is_accepted() -> None:
    app = QueueTasks()

    @app.task
    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TaskArgumentsError, match="task 'two'"):
        await app.map("two", [1, 2])
    assert app.stats()["unfinished"] == 0


async def test_coroutines_map_one_task_per_item_and_refuse_chunks() -> None:
    app = QueueTasks()

    @app.task
    async def inc(x: int) -> int:
        return x + 1

    async with app:
        assert await app.map("inc", [1, 2, 3]) == [2, 3, 4]
        with pytest.raises(Exception, match="plain function"):
            await app.map("inc", [1, 2, 3], chunksize=2)


def test_sync_facade_map() -> None:
    from qtasks_mp import QueueTasks as SyncApp

    app = SyncApp()
    app.task(name="double")(lambda x: 2 * x)
    try:
        assert app.map("double", range(10), chunksize=3, timeout=10) == [2 * x for x in range(10)]
    finally:
        app.stop()
