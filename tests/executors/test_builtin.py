"""Inline and thread executors: concurrency bounds, timeouts, odd callables."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from qtasks_mp import TaskTimeout, ThreadExecutor
from qtasks_mp.asyncio import QueueTasks


async def test_inline_runs_at_most_max_tasks_process_at_once(app: QueueTasks) -> None:
    app.config.max_tasks_process = 3
    running = peak = 0
    release = asyncio.Event()
    three_in = asyncio.Event()

    @app.task
    async def io_bound() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_in.set()
        await release.wait()
        running -= 1

    for _ in range(10):
        await app.add_task("io_bound")
    await app.start()
    await asyncio.wait_for(three_in.wait(), 5)
    assert app.stats()["executors"]["inline"]["active"] == 3
    assert app.stats()["queued"] == 7
    release.set()
    assert await app.wait_idle(5)
    assert peak == 3


async def test_inline_timeout_cancels_the_coroutine(app: QueueTasks, gate: asyncio.Event) -> None:
    cancelled = asyncio.Event()

    @app.task(timeout=0.1)
    async def hangs() -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await app.start()
    done = await app.add_task("hangs", timeout=5)
    assert done is not None and done.status == "error"
    assert "TaskTimeout" in (done.traceback or "") and "coroutine was cancelled" in (
        done.traceback or ""
    )
    assert cancelled.is_set()


async def test_thread_timeout_fails_the_task_and_says_the_thread_runs_on(app: QueueTasks) -> None:
    app.config.thread_workers = 2
    never = threading.Event()
    release = threading.Event()

    @app.task(timeout=0.1)
    def stuck() -> None:
        release.wait(10)
        never.wait(0)

    @app.task
    def quick() -> str:
        return "ok"

    await app.start()
    done = await app.add_task("stuck", timeout=5)
    assert done is not None and done.status == "error"
    assert "a thread cannot be stopped" in (done.traceback or "")
    thread = app.executors["thread"]
    assert thread.stats()["overrun"] == 1 and thread.capacity == 1  # the slot stays busy
    done = await app.add_task("quick", timeout=5)  # the other slot still works
    assert done is not None and done.returning == "ok"
    release.set()
    for _ in range(500):
        if thread.stats()["overrun"] == 0:
            break
        await asyncio.sleep(0.01)
    assert thread.capacity == 2


def test_task_timeout_is_also_a_builtin_timeout_error() -> None:
    err = TaskTimeout("t", 0.5, "what happened")
    assert isinstance(err, TimeoutError) and "task 't' exceeded its timeout of 0.5s" in str(err)


async def test_callable_object_with_async_call_runs_as_a_coroutine(app: QueueTasks) -> None:
    class Sender:
        async def __call__(self, text: str) -> str:
            await asyncio.sleep(0)
            return text

    app.task(name="send")(Sender())
    assert app.specs["send"].executor == "inline"
    await app.start()
    done = await app.add_task("send", "hi", timeout=5)
    assert done is not None and done.returning == "hi"


async def test_plain_function_returning_a_coroutine(app: QueueTasks) -> None:
    async def inner() -> int:
        return 5

    app.task(name="inline_wrapper", executor="inline")(lambda: inner())
    app.task(name="thread_wrapper")(lambda: inner())
    await app.start()
    done = await app.add_task("inline_wrapper", timeout=5)
    assert done is not None and done.returning == 5
    done = await app.add_task("thread_wrapper", timeout=5)
    assert done is not None and done.status == "error"
    assert "declare it `async def`" in (done.traceback or "")


async def test_thread_generator_and_function_run_off_the_loop_thread(app: QueueTasks) -> None:
    @app.task
    def where() -> str:
        return threading.current_thread().name

    await app.start()
    done = await app.add_task("where", timeout=5)
    assert done is not None and done.returning.startswith("qtasks_mp")


async def test_custom_executor_instance_via_constructor() -> None:
    pool = ThreadExecutor(max_workers=1)
    app = QueueTasks(executors={"blocking_io": pool})
    seen: list[Any] = []
    app.task(name="f", executor="blocking_io")(lambda x: seen.append(x))
    async with app:
        await app.add_task("f", 1, timeout=5)
    assert seen == [1] and app.executors["blocking_io"] is pool and pool.slots == 1


def test_an_instance_given_to_a_task_gets_its_own_lane() -> None:
    app = QueueTasks()
    app_pool = app.executors["thread"]
    own = ThreadExecutor(max_workers=1)  # named "thread" too
    with pytest.raises(Exception, match="does not run"):  # refused before anything changes
        app.task(name="coro", executor=own)(_coro)
    assert app.executors["thread"] is app_pool and own not in app.executors.values()
    app.task(name="f", executor=own)(lambda: None)
    app.task(name="g", executor=own)(lambda: None)  # the same instance: the same lane
    assert app.executors["thread"] is app_pool
    assert app.executors["thread-2"] is own
    assert app.specs["f"].executor == app.specs["g"].executor == "thread-2"


async def _coro() -> None: ...


async def test_stop_does_not_wait_for_a_thread_past_shutdown_timeout() -> None:
    app = QueueTasks()
    app.config.shutdown_timeout = 0.1
    release = threading.Event()
    started = threading.Event()

    @app.task
    def hung() -> None:
        started.set()
        release.wait(20)

    try:
        async with app:
            await app.add_task("hung")
            await asyncio.to_thread(started.wait, 5)
            t0 = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - t0 < 3  # not the 20 s the thread holds
    finally:
        release.set()
