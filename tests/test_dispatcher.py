"""Dispatcher edge cases: executors whose room changes while tasks wait."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

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


async def test_room_freed_by_a_caller_run_call_is_filled_while_the_lane_workers_are_busy() -> None:
    """Two waiting callers run their own calls (eager); three more tasks wait in the
    store. When the first caller's call ends, a lane worker takes `b` and is busy with
    it; when the second's ends, its room must go to `c` at once, not when `b` ends
    (it went unused: a CPU batch of 50 ms calls lost a call's length of a worker)."""
    app = QueueTasks()
    app.config.thread_workers = 2
    go = {name: threading.Event() for name in "xyabcd"}
    started = {name: threading.Event() for name in "xyabcd"}

    @app.task
    def job(name: str) -> str:
        started[name].set()
        assert go[name].wait(10), f"{name} was never let go"
        return name

    async def started_(name: str) -> None:
        assert await asyncio.to_thread(started[name].wait, 5), f"{name} did not start"

    async with app:
        x = asyncio.ensure_future(app.add_task("job", "x", timeout=10))
        y = asyncio.ensure_future(app.add_task("job", "y", timeout=10))
        await started_("x")
        await started_("y")
        for name in "bcd":
            await app.add_task("job", name)
        go["x"].set()
        assert (await x) is not None
        await started_("b")
        go["y"].set()
        assert (await y) is not None
        await started_("c")  # while b still runs
        assert not go["b"].is_set()
        for event in go.values():
            event.set()
        assert await app.wait_idle(timeout=10)
    assert app.stats()["tasks"]["job"]["ok"] == 5


async def test_a_task_no_longer_registered_fails_with_an_error_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A task queued by another version of the program, whose name this one does not
    register: it ends `error` saying so, and the log says it too (no middleware runs
    for it, so CallLogging does not)."""
    store = f"sqlite:///{tmp_path / 'tasks.db'}"
    old = QueueTasks("shop", store=store)

    @old.task(name="old_name")
    async def renamed() -> None: ...

    queued = await old.add_task("old_name")  # not started: it waits in the file
    assert queued is not None
    new = QueueTasks("shop", store=store)

    @new.task(name="new_name")
    async def renamed_now() -> None: ...

    with caplog.at_level(logging.ERROR, logger="qtasks_mp"):
        async with new:
            done = await new.wait(queued.uuid, timeout=10)
    assert done is not None and done.status == "error"
    assert "'old_name' is not registered in this app" in (done.traceback or "")
    assert f"task {queued.uuid} failed: task 'old_name' is not registered" in caplog.text
