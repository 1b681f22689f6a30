"""Run a coroutine inside the task that awaits it; let it go on alone if that task stops.

A caller of `add_task(..., timeout=)` waits anyway. When the task's lane is idle, the
caller's own asyncio task drives the dispatcher's coroutine for it, so a call to a
worker process costs two loop turns (send; the reply wakes the caller) instead of four
(wake a worker coroutine; send; the reply wakes it; it wakes the caller).

The caller may stop waiting before the end: its timeout runs out, it is cancelled, or
the app stops. The task was accepted, so its coroutine must go on. It is handed to a
task of its own, still waiting on the very future it waited on: nothing it awaits is
cancelled on the caller's behalf.

How: the caller's task awaits an `Eager`, a Future-compatible object (asyncio's
`_asyncio_future_blocking` protocol) that puts the task's wake-up callback on the
future the coroutine waits on. When that future is done the caller wakes directly.
When the caller stops waiting, the callback is taken off that future, the coroutine is
handed off, and the `Eager` wakes the caller itself.

Only for code that does not rely on being its own task: inside, `current_task()` is the
caller's, so `asyncio.timeout()` there would cancel the caller. The dispatcher drives
the middleware chain and `executor.run` this way, never user coroutines.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Adopt = Callable[["asyncio.Task[Any]"], None]


class Eager(Generic[T]):
    """One coroutine, run in the awaiting task until done or `detach()`ed."""

    def __init__(self, coro: Coroutine[Any, Any, T], adopt: Adopt) -> None:
        self._coro = coro
        self._adopt = adopt  # gets the task that carries on after a detach
        self._ctx = contextvars.copy_context()  # the coroutine's, as if it were a task
        self._loop = asyncio.get_running_loop()
        self._waiting_on: Any = None  # the future the coroutine waits on now
        self._wakeup: Callable[..., Any] | None = None  # the caller task's, on that future
        self._wakeup_ctx: contextvars.Context | None = None
        self._asyncio_future_blocking = False
        self.detached = False
        self._caller_cancelled = False

    async def run(self) -> tuple[bool, T | None]:
        """(True, result) if the coroutine ended here; (False, None) if it went on alone.

        Exceptions of the coroutine propagate. A cancelled caller gets CancelledError;
        the coroutine goes on.
        """
        send, throw, ctx = self._coro.send, self._coro.throw, self._ctx
        exc: BaseException | None = None
        while True:
            try:
                yielded = ctx.run(send, None) if exc is None else ctx.run(throw, exc)
            except StopIteration as stop:
                return True, stop.value
            exc = None
            if self.detached:  # detached by the coroutine's own doing, in that step
                self._hand_off(yielded)
                return False, None
            if yielded is None:  # a bare `yield` (asyncio.sleep(0)): one loop turn
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:  # the caller's: the coroutine goes on
                    self._hand_off(None)
                    raise
                if self.detached:
                    self._hand_off(None)
                    return False, None
                continue
            if not getattr(yielded, "_asyncio_future_blocking", False):
                exc = RuntimeError(f"coroutine yielded {yielded!r}, not a future")
                continue
            self._waiting_on = yielded
            try:
                await self
            except BaseException as e:  # the future's exception: the coroutine's to see
                exc = e
            self._waiting_on = self._wakeup = self._wakeup_ctx = None
            if self._caller_cancelled:
                raise asyncio.CancelledError
            if self.detached:
                return False, None

    def detach(self) -> None:
        """Stop running the coroutine here: it goes on in a task of its own."""
        if self.detached:
            return
        self.detached = True
        fut = self._waiting_on
        if fut is None:  # between steps: `run` hands it off when the step ends
            return
        if self._wakeup is not None and fut.remove_done_callback(self._wakeup):
            # Not woken yet: wake the caller now, through us.
            self._loop.call_soon(self._wakeup, self, context=self._wakeup_ctx)
        # (Otherwise its wake-up is already on its way; `run` sees `detached` then.)
        self._hand_off(fut)

    def _hand_off(self, fut: Any) -> None:
        # Created inside the coroutine's context, the task runs in a copy of it
        # (`create_task(context=)` is Python 3.11+).
        task = self._ctx.run(self._loop.create_task, carry_on(self._coro, fut))
        self._adopt(task)

    # -- the Future-compatible side, for the caller's task --

    def __await__(self) -> Generator[Any, None, None]:
        self._asyncio_future_blocking = True
        yield self

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(
        self, fn: Callable[..., Any], *, context: contextvars.Context | None = None
    ) -> None:
        self._wakeup, self._wakeup_ctx = fn, context
        self._waiting_on.add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Callable[..., Any]) -> int:
        return 0  # the task never takes its callback back; `detach` does it on the future

    def cancel(self, msg: Any = None) -> bool:
        """The caller was cancelled: it stops waiting, the coroutine goes on."""
        self._caller_cancelled = True
        self.detach()
        return True

    def result(self) -> None:
        """What the caller's task reads when `detach` wakes it."""
        if self._caller_cancelled:
            raise asyncio.CancelledError

    def done(self) -> bool:
        return self.detached

    def cancelled(self) -> bool:
        return self._caller_cancelled

    def __repr__(self) -> str:
        return f"<Eager waiting on {self._waiting_on!r}>"


async def carry_on(coro: Coroutine[Any, Any, T], fut: Any) -> T:
    """Run on, to its end, a coroutine someone drove by hand (`coro.send`) until it
    yielded `fut`: the future it waits on, or None after a bare `yield`.

    Wrap it in a task of its own: `loop.create_task(carry_on(coro, fut))`. The task
    waits on `fut` as the coroutine would have, then sends into the coroutine (or
    throws `fut`'s exception into it) step by step, as `await` would; cancelling the
    task cancels what the coroutine waits on then. `coro` must not have been started
    by another task, nor be driven by anyone else from here on. Used by `Eager` (a
    caller that stops waiting) and by the dispatcher (a sync caller's direct call).
    """
    return await _Resume(coro, fut)


class _Resume(Generic[T]):
    """Continue a coroutine that was stopped waiting on `fut` (None: a bare yield)."""

    def __init__(self, coro: Coroutine[Any, Any, T], fut: Any) -> None:
        self.coro, self.fut = coro, fut

    def __await__(self) -> Generator[Any, Any, T]:
        coro, yielded = self.coro, self.fut
        while True:
            if yielded is not None:
                yielded._asyncio_future_blocking = True
            try:
                yield yielded
            except BaseException as e:  # as `yield from` would: into the coroutine
                try:
                    yielded = coro.throw(e)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
