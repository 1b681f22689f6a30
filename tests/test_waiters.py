"""A waiter's done-callbacks (waiters.py keeps them itself, and runs those of all the
waiters answered in a loop turn from one loop callback): they behave as an asyncio
future's do."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any

import pytest

from qtasks_mp import Task, waiters
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.task import TaskRecord, TaskStatus, new_key

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
async def app() -> Any:
    app = QueueTasks()
    app.config.logs_default_level = 30
    gate = asyncio.Event()

    @app.task
    async def echo(x: int) -> int:
        return x

    @app.task
    async def held() -> str:
        await gate.wait()
        return "late"

    app.gate = gate  # type: ignore[attr-defined]
    await app.start()
    yield app
    gate.set()
    await app.stop()


async def test_callbacks_run_once_in_order_in_the_context_they_were_added_in(
    app: QueueTasks,
) -> None:
    seen: list[tuple[str, int, str]] = []
    waiters = [app.add_task("echo", i, timeout=10) for i in range(3)]
    for i, waiter in enumerate(waiters):
        assert isinstance(waiter, asyncio.Future)
        for tag in ("a", "b"):
            who.set(f"{tag}{i}")
            waiter.add_done_callback(
                lambda fut, tag=tag: seen.append((tag, fut.result().returning, who.get()))
            )
    who.set("caller")
    done = await asyncio.gather(*waiters)
    await asyncio.sleep(0)  # callbacks added after gather's run in the same turn
    assert [t.returning for t in done if t is not None] == [0, 1, 2]
    assert sorted(seen) == sorted([(tag, i, f"{tag}{i}") for i in range(3) for tag in ("a", "b")])
    assert [s for s in seen if s[1] == 1] == [("a", 1, "a1"), ("b", 1, "b1")]  # in order
    assert who.get() == "caller"


async def test_a_failing_callback_is_reported_and_the_others_still_run(
    app: QueueTasks,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        ran: list[int] = []

        def boom(fut: asyncio.Future[Task | None]) -> None:
            raise ValueError("a broken callback")

        first = app.add_task("echo", 1, timeout=10)
        second = app.add_task("echo", 2, timeout=10)
        assert isinstance(first, asyncio.Future) and isinstance(second, asyncio.Future)
        first.add_done_callback(boom)
        first.add_done_callback(lambda fut: ran.append(1))
        second.add_done_callback(lambda fut: ran.append(2))
        assert (await first) is not None and (await second) is not None
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert sorted(ran) == [1, 2]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], ValueError)
    assert reported[0]["future"] is first
    assert "Exception in callback" in reported[0]["message"]


async def test_removed_callbacks_do_not_run(app: QueueTasks) -> None:
    ran: list[str] = []

    def one(fut: Any) -> None:
        ran.append("one")

    def two(fut: Any) -> None:
        ran.append("two")

    waiter = app.add_task("echo", 1, timeout=10)
    assert isinstance(waiter, asyncio.Future)
    waiter.add_done_callback(one)
    waiter.add_done_callback(two)
    waiter.add_done_callback(one)
    assert waiter.remove_done_callback(one) == 2
    assert waiter.remove_done_callback(one) == 0
    await waiter
    await asyncio.sleep(0)
    assert ran == ["two"]


async def test_a_callback_added_to_a_done_waiter_runs_soon(app: QueueTasks) -> None:
    waiter = app.add_task("echo", 5, timeout=10)
    assert isinstance(waiter, asyncio.Future)
    await waiter
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiter.add_done_callback(lambda fut: got.set_result(fut.result().returning))
    assert not got.done()  # soon, not now: as asyncio does
    assert await asyncio.wait_for(got, 5) == 5


async def test_callbacks_run_when_the_time_runs_out_or_the_waiter_is_cancelled(
    app: QueueTasks,
) -> None:
    outcomes: list[str] = []
    timed_out = app.add_task("held", timeout=0.01)
    cancelled = app.add_task("held", timeout=60)
    assert isinstance(timed_out, asyncio.Future) and isinstance(cancelled, asyncio.Future)
    timed_out.add_done_callback(lambda fut: outcomes.append(f"result {fut.result()}"))
    cancelled.add_done_callback(lambda fut: outcomes.append(f"cancelled {fut.cancelled()}"))
    assert await timed_out is None
    assert cancelled.cancel()
    await asyncio.sleep(0)
    assert sorted(outcomes) == ["cancelled True", "result None"]


def test_a_keyboard_interrupt_in_a_callback_leaves_the_others_queued() -> None:
    """It leaves the loop, as from asyncio's own handle; the callbacks not run yet (of
    the same waiter and of others answered in the same turn) run at the next turns."""
    loop = asyncio.new_event_loop()
    try:
        app = QueueTasks()
        app.config.logs_default_level = 30

        @app.task
        async def echo(x: int) -> int:
            return x

        loop.run_until_complete(app.start())
        ran: list[str] = []

        def interrupt(fut: Any) -> None:
            raise KeyboardInterrupt

        async def add() -> None:
            first = app.add_task("echo", 1, timeout=10)
            second = app.add_task("echo", 2, timeout=10)
            assert isinstance(first, asyncio.Future) and isinstance(second, asyncio.Future)
            first.add_done_callback(interrupt)
            first.add_done_callback(lambda fut: ran.append("first's second callback"))
            second.add_done_callback(lambda fut: ran.append("second's callback"))

        loop.run_until_complete(add())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(5))  # both are answered in one turn
        loop.run_until_complete(asyncio.sleep(0.01))
        assert ran == ["first's second callback", "second's callback"]
        loop.run_until_complete(app.stop())
    finally:
        loop.close()


async def test_every_callback_gets_its_context_if_gathers_callback_is_not_known(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(An asyncio whose gather has changed.) Callables without a `__code__` too."""
    monkeypatch.setattr(waiters, "_GATHER_CALLBACK", None)
    seen: list[str] = []
    waiter = app.add_task("echo", 1, timeout=10)
    assert isinstance(waiter, asyncio.Future)
    who.set("adder")
    waiter.add_done_callback(functools.partial(lambda fut: seen.append(who.get())))
    who.set("caller")
    await asyncio.gather(waiter)
    await asyncio.sleep(0)
    assert seen == ["adder"]


async def test_a_gather_of_waiters_is_done_when_its_last_waiter_is_answered() -> None:
    """gather's own callback runs as each waiter is answered, not a loop turn later: the
    gather's future is done at the last answer (its awaiter wakes on the next turn)."""
    loop = asyncio.get_running_loop()
    owner = waiters.Waiters(loop, host=None, read=None)  # type: ignore[arg-type]
    records = [TaskRecord(new_key(), "t", "inline", 0, (i,), {}, 0.0) for i in range(3)]
    for r in records:
        r.status, r.returning = TaskStatus.SUCCESS, r.args[0]
    gathered = asyncio.gather(*(owner.wait(r.key, 10) for r in records))
    for r in records[:2]:
        owner.resolve(r)
    assert not gathered.done()
    owner.resolve(records[2])
    assert gathered.done()
    assert [t.returning for t in gathered.result()] == [0, 1, 2]
    await owner.close()
