"""call_in_loop: a blocking call from a thread into a loop running in another thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from qtasks_mp.handoff import call_in_loop

L = TypeVar("L", bound=asyncio.AbstractEventLoop)


def _running(loop: L) -> Iterator[L]:
    """`loop` running in a thread of its own, stopped and closed after."""
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    yield from _running(asyncio.new_event_loop())


def test_the_result_comes_back_from_the_loop_thread(loop: asyncio.AbstractEventLoop) -> None:
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    ident, ran_in = call_in_loop(loop, where())
    assert ident != threading.get_ident() and ran_in is loop


def test_the_coroutines_exception_is_raised_in_the_caller(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        call_in_loop(loop, fail())


def test_a_task_cancelled_in_the_loop_raises_cancelled_error(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def cancel_myself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    with pytest.raises(concurrent.futures.CancelledError):
        call_in_loop(loop, cancel_myself())


def test_a_closed_loop_raises_and_the_coroutine_is_closed() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    ran = []

    async def never() -> None:
        ran.append(1)

    coro = never()
    with pytest.raises(RuntimeError, match="closed"):
        call_in_loop(loop, coro)
    assert coro.cr_frame is None and ran == []  # closed, not left to warn at GC


class _InterruptedOnce(asyncio.SelectorEventLoop):
    """A loop whose next `call_soon_threadsafe` raises KeyboardInterrupt after queueing
    the callback (Ctrl-C in the caller's thread just after the hand-over), once
    `before` is set."""

    interrupt = False
    before: threading.Event | None = None

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        if self.interrupt:
            self.interrupt = False
            assert self.before is None or self.before.wait(10)
            raise KeyboardInterrupt
        return handle


@pytest.fixture
def interrupted_loop() -> Iterator[_InterruptedOnce]:
    yield from _running(_InterruptedOnce())


def test_a_call_the_loop_started_runs_on_after_an_interrupted_hand_over(
    interrupted_loop: _InterruptedOnce,
) -> None:
    """The interrupt lands once the loop runs the call (a caller's task, driving its own
    call): closing it from the caller's thread would cut it short mid-call."""
    started, ended = threading.Event(), threading.Event()

    async def running() -> None:
        started.set()
        await asyncio.sleep(0.01)
        ended.set()

    interrupted_loop.interrupt, interrupted_loop.before = True, started
    with pytest.raises(KeyboardInterrupt):
        call_in_loop(interrupted_loop, running())
    assert ended.wait(10), "the call the loop had started was cut short"


def test_a_call_the_loop_had_not_started_is_closed_after_an_interrupted_hand_over(
    interrupted_loop: _InterruptedOnce,
) -> None:
    """The loop is held in a callback, so the interrupted caller gets there first: the
    call never runs (nothing half done), and its coroutine is closed, not left to warn
    that it was never awaited."""
    hold = threading.Event()
    ran: list[int] = []

    async def never() -> None:
        ran.append(1)

    interrupted_loop.call_soon_threadsafe(hold.wait, 10)
    interrupted_loop.interrupt = True
    coro = never()
    try:
        with pytest.raises(KeyboardInterrupt):
            call_in_loop(interrupted_loop, coro)
    finally:
        hold.set()
    assert coro.cr_frame is None  # closed
    done = threading.Event()
    interrupted_loop.call_soon_threadsafe(done.set)  # after the queued hand-over
    assert done.wait(10) and ran == []
