"""Events (QTasks' `app.events.on.<event>()`): handlers told when the app and its
tasks reach a point of their lifecycle.

    app.start()  ── starting ──> (store, executors, dispatcher) ── worker_running
    app.stop()   ── worker_stopping ──> (running tasks end, all closed) ── stopping
    each attempt of a task: task_running ──> (middlewares, executor) ──> task_stopping
    a task ends for good, in the app that ran (or held) it: task_success | task_error
                                                            | task_cancel

Handlers may be plain functions or coroutine functions; both run in the app's event
loop, in the order registered, with keyword arguments: `app` (the app they were
registered on) and, for the task events, `task` (a `Task` as it is at that point). A
handler that raises is logged with its event and never stops the app or the task.

Nothing costs anything while an event has no handler: the app events are one dict
lookup per start or stop, the per-attempt ones are a middleware that the app puts in a
task's chain only when such a handler is registered (`middleware()`, at start), and
the final ones are one bool test as a task ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .executors.base import Call
from .middleware.base import CallNext, Middleware
from .task import Task, TaskRecord, TaskStatus

log = logging.getLogger("qtasks_mp.events")

F = TypeVar("F", bound=Callable[..., Any])

#: final status -> the event that says so
_ENDED = {
    TaskStatus.SUCCESS: "task_success",
    TaskStatus.ERROR: "task_error",
    TaskStatus.CANCEL: "task_cancel",
}
_PER_ATTEMPT = ("task_running", "task_stopping")


class OnEvents:
    """`app.events.on`: one decorator per event, used as `@on.starting()` (QTasks) or
    `@on.starting`; it registers the function and returns it unchanged."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}

    def _decorator(self, event: str, func: F | None) -> Any:
        def register(f: F) -> F:
            if not callable(f):
                raise TypeError(
                    f"app.events.on.{event}: a handler is a function, got {f!r}; "
                    f"write @app.events.on.{event}() above a def"
                )
            self.handlers.setdefault(event, []).append(f)
            return f

        return register if func is None else register(func)

    @overload
    def starting(self, func: F) -> F: ...
    @overload
    def starting(self, func: None = None) -> Callable[[F], F]: ...
    def starting(self, func: F | None = None) -> Any:
        """The app starts: before its store opens and its executors start."""
        return self._decorator("starting", func)

    @overload
    def worker_running(self, func: F) -> F: ...
    @overload
    def worker_running(self, func: None = None) -> Callable[[F], F]: ...
    def worker_running(self, func: F | None = None) -> Any:
        """The app runs: its dispatcher takes tasks."""
        return self._decorator("worker_running", func)

    @overload
    def worker_stopping(self, func: F) -> F: ...
    @overload
    def worker_stopping(self, func: None = None) -> Callable[[F], F]: ...
    def worker_stopping(self, func: F | None = None) -> Any:
        """The app begins to stop: its dispatcher takes no more tasks."""
        return self._decorator("worker_stopping", func)

    @overload
    def stopping(self, func: F) -> F: ...
    @overload
    def stopping(self, func: None = None) -> Callable[[F], F]: ...
    def stopping(self, func: F | None = None) -> Any:
        """The app has stopped: running tasks ended, executors and store closed."""
        return self._decorator("stopping", func)

    @overload
    def task_running(self, func: F) -> F: ...
    @overload
    def task_running(self, func: None = None) -> Callable[[F], F]: ...
    def task_running(self, func: F | None = None) -> Any:
        """An attempt of a task starts (each retry is an attempt)."""
        return self._decorator("task_running", func)

    @overload
    def task_stopping(self, func: F) -> F: ...
    @overload
    def task_stopping(self, func: None = None) -> Callable[[F], F]: ...
    def task_stopping(self, func: F | None = None) -> Any:
        """An attempt of a task has ended, before its outcome is recorded."""
        return self._decorator("task_stopping", func)

    @overload
    def task_success(self, func: F) -> F: ...
    @overload
    def task_success(self, func: None = None) -> Callable[[F], F]: ...
    def task_success(self, func: F | None = None) -> Any:
        """A task ended `success` (its result saved)."""
        return self._decorator("task_success", func)

    @overload
    def task_error(self, func: F) -> F: ...
    @overload
    def task_error(self, func: None = None) -> Callable[[F], F]: ...
    def task_error(self, func: F | None = None) -> Any:
        """A task ended `error`, its retries used up."""
        return self._decorator("task_error", func)

    @overload
    def task_cancel(self, func: F) -> F: ...
    @overload
    def task_cancel(self, func: None = None) -> Callable[[F], F]: ...
    def task_cancel(self, func: F | None = None) -> Any:
        """A task this app had taken (running, or waiting in its worker) ended `cancel`."""
        return self._decorator("task_cancel", func)


class Events:
    """`app.events`: the handlers (`on`) and their firing. `app()` gives the app the
    handlers are told about (the sync facade, for a sync app)."""

    def __init__(self, app: Callable[[], object]) -> None:
        self.on = OnEvents()
        self._app = app
        self._pending: set[asyncio.Task[None]] = set()  # final-status handlers running

    async def fire(self, event: str, **kwargs: Any) -> None:
        """Call `event`'s handlers in order, awaiting those that return an awaitable.
        A handler that raises is logged; the next one still runs."""
        for handler in self.on.handlers.get(event, ()):
            try:
                result = handler(app=self._app(), **kwargs)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:
                log.exception(
                    "event %r: handler %s failed (the app goes on)",
                    event,
                    getattr(handler, "__qualname__", repr(handler)),
                )

    def middleware(self) -> Middleware | None:
        """The middleware firing task_running and task_stopping, if either has a handler."""
        if any(self.on.handlers.get(e) for e in _PER_ATTEMPT):
            return _AttemptEvents(self)
        return None

    def wants_ended(self) -> bool:
        return any(self.on.handlers.get(e) for e in _ENDED.values())

    def ended(self, record: TaskRecord) -> None:
        """(In the loop.) A task ended for good: fire its status's event, in a task of
        its own (the finishing path does not wait for handlers); `drain()` awaits it."""
        event = _ENDED.get(record.status)
        if event is None or not self.on.handlers.get(event):
            return
        task = asyncio.get_running_loop().create_task(self.fire(event, task=Task(record)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the final-status handlers still running (at stop); after `timeout_s`
        cancel them, saying so."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("events: %d task handlers still ran at stop; cancelled", len(late))


class _AttemptEvents(Middleware):
    """Outermost in a task's chain when task_running or task_stopping has a handler."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        await self.events.fire("task_running", task=Task(call.record))
        try:
            return await call_next(call)
        finally:
            await self.events.fire("task_stopping", task=Task(call.record))


# QTasks' names (`qtasks.events`): one implementation behind both.
AsyncEvents = SyncEvents = Events

__all__ = ["AsyncEvents", "Events", "OnEvents", "SyncEvents"]
