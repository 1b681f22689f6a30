"""A blocking call into an event loop from another thread: one hop there, one back.

`asyncio.run_coroutine_threadsafe(coro, loop).result()` chains a task to a
`concurrent.futures.Future` (its condition variable, its callbacks, a state copied
across) and took ~45 µs per call here; a plain lock released by the task's done
callback takes ~20 µs. The sync facade makes every `add_task` this way, so a sync
caller's round trip is mostly these hops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: A blocked caller wakes this often. A signal (Ctrl-C) delivered to another thread of
#: the process does not interrupt the main thread's wait, and Python runs its handler
#: only when that thread runs again: without slices, only when the call ended.
WAKE_S = 0.25


class _Reply(Generic[T]):
    """Where the loop leaves the coroutine's outcome; `lock` is released once it is.

    The coroutine waits in `coro` (a list of one) for whichever side pops it first
    (`list.pop` is atomic): the loop, which runs it (`start`), or a caller interrupted
    in the hand-over (`abandon`), which closes it. So an interrupted call either runs
    whole or not at all: never closed from the caller's thread while the loop runs it."""

    __slots__ = ("coro", "lock", "task")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = [coro]
        self.lock = threading.Lock()
        self.lock.acquire()
        self.task: asyncio.Task[T] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            coro = self.coro.pop()
        except IndexError:  # abandoned
            return
        try:
            task = self.task = loop.create_task(coro)
        except BaseException:
            coro.close()
            self.lock.release()
            raise
        task.add_done_callback(self.done)

    def abandon(self) -> None:
        with contextlib.suppress(IndexError):  # (else the loop has it: it runs on)
            self.coro.pop().close()

    def done(self, task: asyncio.Task[T]) -> None:
        self.lock.release()


def call_in_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` as a task of `loop` (running in another thread) and block for its
    result; its exception is raised here. A task cancelled in the loop raises
    `concurrent.futures.CancelledError`, as `run_coroutine_threadsafe` would.

    An exception in the hand-over (a closed loop, Ctrl-C) closes `coro` unless the loop
    has started it: then it runs on, as a call interrupted later does."""
    reply: _Reply[T] = _Reply(coro)
    try:
        # In this thread's context: what it runs in the loop sees its context variables
        # (a thread task's nested wait finds its call there: lending.py).
        loop.call_soon_threadsafe(reply.start, loop, context=contextvars.copy_context())
    except BaseException:  # the loop is closed, or KeyboardInterrupt (queued or not)
        reply.abandon()
        raise
    while not reply.lock.acquire(True, WAKE_S):
        pass  # (a slice ended: Python runs a signal handler here, e.g. Ctrl-C's)
    task = reply.task
    if task is None:
        raise RuntimeError("the event loop could not start the call")
    if task.cancelled():
        raise concurrent.futures.CancelledError()
    return task.result()
