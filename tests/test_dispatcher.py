"""Dispatcher edge cases: executors whose room changes while tasks wait."""

from __future__ import annotations

import asyncio
from typing import Any

from qtasks_mp import Call, Executor
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import run_in_loop


class Resizable(Executor):
    """Runs coroutines inline, with `slots` the test can change at any time."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    @property
    def slots(self) -> int:
        return self.size

    async def run(self, call: Call) -> Any:
        return await run_in_loop(call)


async def test_queued_tasks_finish_after_the_executor_shrinks() -> None:
    pool = Resizable(8)
    app = QueueTasks(executors={"resizable": pool})
    release = asyncio.Event()
    eight_running = asyncio.Event()
    running = 0

    @app.task(executor="resizable")
    async def job(i: int) -> int:
        nonlocal running
        running += 1
        if running == 8:
            eight_running.set()
        await release.wait()
        return i

    async with app:
        for i in range(50):
            await app.add_task("job", i)
        await asyncio.wait_for(eight_running.wait(), 5)
        pool.size = 2  # surplus worker coroutines retire as their calls end
        release.set()
        assert await app.wait_idle(timeout=10), app.stats()
    assert app.stats()["tasks"]["job"]["ok"] == 50


async def test_queued_tasks_use_room_that_appears_later() -> None:
    pool = Resizable(1)
    app = QueueTasks(executors={"resizable": pool})
    seen: list[int] = []

    @app.task(executor="resizable")
    async def job(i: int) -> None:
        seen.append(i)

    async with app:
        pool.size = 0  # no room: tasks wait in the store
        for i in range(5):
            await app.add_task("job", i)
        await asyncio.sleep(0.02)
        assert seen == []
        pool.size = 3
        pool.wakeup()  # an executor says when its room grows
        assert await app.wait_idle(timeout=5)
    assert sorted(seen) == [0, 1, 2, 3, 4]
