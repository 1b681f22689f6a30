"""call_in_loop: a blocking call from a thread into a loop running in another thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator

import pytest

from qtasks_mp.handoff import call_in_loop


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


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
