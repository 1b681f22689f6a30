"""Backpressure and retention: 100k queued tasks stay records, not coroutines."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.task import TaskRecord

N = 100_000


async def test_100k_queued_tasks_do_not_become_100k_coroutines(app: QueueTasks) -> None:
    app.config.max_tasks_process = 10
    app.config.result_retention_count = 1_000
    release = asyncio.Event()
    done = 0

    @app.task
    async def job(i: int) -> None:
        nonlocal done
        await release.wait()
        done += 1

    await app.start()
    tasks_before = len(asyncio.all_tasks())
    for i in range(N):
        await app.add_task("job", i)
    await asyncio.sleep(0.05)  # give the dispatcher turns; it must stay bounded anyway
    # at most one worker per slot, plus the dispatcher already counted before
    assert len(asyncio.all_tasks()) - tasks_before <= 10
    assert app.stats()["executors"]["inline"]["active"] == 10
    release.set()
    assert await app.wait_idle(timeout=50)
    assert done == N
    counts = await app.store.counts()
    assert sum(counts.values()) <= 1_000  # retention bound, not 100k records


async def test_memory_returns_to_baseline_after_a_burst() -> None:
    app = QueueTasks()
    app.config.result_retention_count = 100

    @app.task
    async def noop(i: int) -> None: ...

    async def burst() -> None:
        for i in range(20_000):
            await app.add_task("noop", i)
        assert await app.wait_idle(timeout=30)

    async with app:
        await burst()  # warm up: reservoirs and caches reach their size
        gc.collect()
        tracemalloc.start()
        base = _ours(tracemalloc.take_snapshot())
        await burst()
        gc.collect()
        grown = _ours(tracemalloc.take_snapshot()) - base
        tracemalloc.stop()
        records = sum(type(o) is TaskRecord for o in gc.get_objects())
    # What is kept is what retention keeps (100 finished records), not one per task...
    assert records <= 100 + 10, f"{records} task records alive after 20k finished tasks"
    # ... and no bytes per task: 20k tasks that each left 100 bytes would be 2 MB. (The
    # store's dict may end the burst on a larger table than it began it: ~0.6-1 MB.)
    assert grown < 1_500_000, f"{grown} bytes kept after 20k finished tasks"


def _ours(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the app's code and held now. Not the process's: threads left
    by earlier tests (a Dask profiler sampling stacks, say) allocate meanwhile too."""
    mine = snapshot.filter_traces([tracemalloc.Filter(True, "*qtasks_mp*")])
    return sum(stat.size for stat in mine.statistics("filename"))
