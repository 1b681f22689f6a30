"""A waiting `add_task` runs the call in the caller's own asyncio task (qtasks_mp/eager.py),
and a caller that stops waiting (timeout, cancellation, app stop) never takes the task down
with it: the call goes on in a task of its own and ends in the store as it would have."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from qtasks_mp import TaskStatus
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.eager import Eager
from qtasks_mp.executors.base import Call, within
from qtasks_mp.executors.thread import ThreadExecutor
from qtasks_mp.middleware.base import CallNext, Middleware

# ---------------------------------------------------------------- Eager on its own


async def turns(until: Any, limit: int = 100) -> None:
    """Let the loop run until `until()` holds (bounded: no sleep-and-hope)."""
    for _ in range(limit):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never came true")


async def test_the_coroutine_runs_in_the_awaiting_task() -> None:
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    adopted: list[asyncio.Task[Any]] = []

    async def coro() -> int:
        seen.append(asyncio.current_task())
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_soon(fut.set_result, 7)
        return await fut + 1

    assert await Eager(coro(), adopted.append).run() == (True, 8)
    assert seen == [asyncio.current_task()]
    assert adopted == []


async def test_exceptions_reach_the_coroutine_and_then_the_caller() -> None:
    loop = asyncio.get_running_loop()

    async def coro() -> None:
        fut: asyncio.Future[None] = loop.create_future()
        loop.call_soon(fut.set_exception, KeyError("from the future"))
        with pytest.raises(KeyError, match="from the future"):
            await fut
        raise ValueError("from the coroutine")

    with pytest.raises(ValueError, match="from the coroutine"):
        await Eager(coro(), lambda t: None).run()


async def test_a_coroutine_that_yields_bare_runs_to_its_end() -> None:
    async def coro() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "done"

    assert await Eager(coro(), lambda t: None).run() == (True, "done")


async def test_context_variables_set_inside_stay_inside() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller's")

    async def coro() -> str:
        var.set("its own")
        await asyncio.sleep(0)
        return var.get()

    assert await Eager(coro(), lambda t: None).run() == (True, "its own")
    assert var.get() == "caller's"


def gated(steps: list[str]) -> tuple[asyncio.Future[int], Any]:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def coro() -> int:
        steps.append("started")
        value = await gate
        steps.append("resumed")
        return value

    return gate, coro()


async def test_detach_hands_the_coroutine_to_a_task_of_its_own() -> None:
    steps: list[str] = []
    adopted: list[asyncio.Task[int]] = []
    gate, coro = gated(steps)
    eager = Eager(coro, adopted.append)
    asyncio.get_running_loop().call_soon(eager.detach)
    assert await eager.run() == (False, None)
    assert steps == ["started"] and not gate.done()  # the caller is back; nothing cancelled
    gate.set_result(5)
    assert await asyncio.wait_for(adopted[0], 5) == 5
    assert steps == ["started", "resumed"]


async def test_a_cancelled_caller_leaves_the_coroutine_running() -> None:
    steps: list[str] = []
    adopted: list[asyncio.Task[int]] = []
    gate, coro = gated(steps)
    caller = asyncio.ensure_future(Eager(coro, adopted.append).run())
    await turns(lambda: steps == ["started"])
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not gate.cancelled()  # what the coroutine waits on is untouched
    gate.set_result(6)
    assert await asyncio.wait_for(adopted[0], 5) == 6
    assert steps == ["started", "resumed"]


async def test_a_caller_cancelled_during_a_bare_yield_leaves_the_coroutine_running() -> None:
    adopted: list[asyncio.Task[int]] = []
    go = False
    turns_taken = 0

    async def coro() -> int:
        nonlocal turns_taken
        while not go:
            turns_taken += 1
            await asyncio.sleep(0)  # a bare yield each time
        return turns_taken

    caller = asyncio.ensure_future(Eager(coro(), adopted.append).run())
    await turns(lambda: turns_taken >= 2)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    go = True
    assert await asyncio.wait_for(adopted[0], 5) >= 2


async def test_detach_in_the_turn_the_future_completes_resumes_it_once() -> None:
    steps: list[str] = []
    adopted: list[asyncio.Task[int]] = []
    gate, coro = gated(steps)
    eager = Eager(coro, adopted.append)

    def both() -> None:  # the caller's wake-up is already on its way when detach runs
        gate.set_result(3)
        eager.detach()

    asyncio.get_running_loop().call_soon(both)
    assert await eager.run() == (False, None)
    assert await asyncio.wait_for(adopted[0], 5) == 3
    assert steps == ["started", "resumed"]


async def test_a_future_cancelled_by_someone_else_is_the_coroutines_business() -> None:
    loop = asyncio.get_running_loop()

    async def coro() -> str:
        fut: asyncio.Future[None] = loop.create_future()
        loop.call_soon(fut.cancel)
        try:
            await fut
        except asyncio.CancelledError:
            return "it saw the cancellation"
        return "it did not"

    assert await Eager(coro(), lambda t: None).run() == (True, "it saw the cancellation")


async def test_within_gives_up_without_cancelling_anything() -> None:
    # What an `eager` executor uses for time limits: asyncio.wait_for (3.12+) would
    # cancel the task that waits, which is the caller's here.
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def coro() -> tuple[bool, bool]:
        late = await within(fut, 0.02)
        fut.set_result(1)
        return late, await within(fut, 5)

    assert await Eager(coro(), lambda t: None).run() == (True, (False, True))


# ---------------------------------------------------------------- through the app


class Recording(ThreadExecutor):
    """The thread executor, noting the asyncio task each call's `run` ran in."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def run(self, call: Call) -> Any:
        self.tasks.append(asyncio.current_task())
        return await super().run(call)


class PassThrough(Middleware):
    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        return await call_next(call)


def blocking_app(*middlewares: Middleware) -> tuple[QueueTasks, threading.Event]:
    """An app with a thread task that blocks until the returned event is set."""
    release = threading.Event()
    app = QueueTasks("eager", middlewares=middlewares, executors={"rec": Recording()})
    app.config.shutdown_timeout = 0.2

    @app.task(executor="rec")
    def hold(value: int) -> int:
        if not release.wait(10):
            raise TimeoutError("the test never released the task")
        return value

    @app.task
    async def cancels_itself() -> str:  # counts on being its own asyncio task (as
        # asyncio.timeout() and TaskGroup do): cancelling it must reach this code only
        me = asyncio.current_task()
        assert me is not None
        asyncio.get_running_loop().call_later(0.05, me.cancel)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            me.uncancel() if hasattr(me, "uncancel") else None
            return "its own cancellation reached it"
        return "no cancellation"

    return app, release


def ran_in(app: QueueTasks) -> list[asyncio.Task[Any] | None]:
    executor = app.executors["rec"]
    assert isinstance(executor, Recording)
    return executor.tasks


async def test_a_waiting_add_task_runs_the_call_in_the_callers_task() -> None:
    app, release = blocking_app()
    release.set()
    async with app:
        await app.add_task("hold", 1)  # not waited for: a dispatcher worker runs it
        await app.wait_idle(5)
        done = await app.add_task("hold", 2, timeout=5)
    assert done is not None and done.returning == 2
    assert ran_in(app) == [ran_in(app)[0], asyncio.current_task()]
    assert ran_in(app)[0] is not asyncio.current_task()


async def test_a_middleware_of_yours_keeps_calls_in_dispatcher_workers() -> None:
    app, release = blocking_app(PassThrough())  # it might count on its task being its own
    release.set()
    async with app:
        done = await app.add_task("hold", 3, timeout=5)
    assert done is not None and done.returning == 3
    assert ran_in(app)[0] is not asyncio.current_task()


async def test_calls_queued_while_callers_hold_every_slot_still_run() -> None:
    # 20 waiting callers, 2 threads: 2 run their calls themselves and hold the room; the
    # other 18 queue. Each that ends must get a worker going for those (they waited out
    # their whole timeout, once).
    app = QueueTasks("eager", executors={"rec": Recording()})
    release = threading.Event()

    @app.task(executor="rec")
    def hold(value: int) -> int:
        release.wait(10)
        return value

    async with app:
        callers = [asyncio.ensure_future(app.add_task("hold", i, timeout=10)) for i in range(20)]
        await turns(lambda: app.executors["rec"].active == 2)
        release.set()
        done = await asyncio.wait_for(asyncio.gather(*callers), 10)
    assert sorted(t.returning for t in done if t is not None) == list(range(20))


async def test_a_caller_whose_timeout_runs_out_leaves_the_task_running() -> None:
    app, release = blocking_app()
    async with app:
        assert await app.add_task("hold", 3, timeout=0.1) is None
        [running] = [t for t in (await app.store.counts()).items() if t[0] == TaskStatus.PROCESS]
        assert running == (TaskStatus.PROCESS, 1)
        release.set()
        assert await app.wait_idle(5)
        counts = await app.store.counts()
    assert counts.get(TaskStatus.SUCCESS) == 1 and counts.get(TaskStatus.PROCESS, 0) == 0


async def test_a_cancelled_caller_leaves_the_task_running() -> None:
    app, release = blocking_app()
    async with app:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(app.add_task("hold", 4, timeout=10), 0.1)
        release.set()
        assert await app.wait_idle(5)
        counts = await app.store.counts()
    assert counts.get(TaskStatus.SUCCESS) == 1


async def test_the_app_stopping_cancels_a_call_run_by_its_caller() -> None:
    app, release = blocking_app()
    try:
        async with app:
            waiting = asyncio.ensure_future(app.add_task("hold", 5, timeout=10))
            await turns(lambda: app.executors["rec"].active == 1)
        # shutdown_timeout ran out: the call was cancelled, its caller told so at once
        done = await asyncio.wait_for(waiting, 5)
        assert done is not None and done.status == TaskStatus.CANCEL
    finally:
        release.set()


async def test_coroutine_tasks_are_never_run_in_the_callers_task() -> None:
    app, _ = blocking_app()
    async with app:
        done = await app.add_task("cancels_itself", timeout=5)
    assert done is not None and done.returning == "its own cancellation reached it"
