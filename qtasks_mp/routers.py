"""QTasks' routers and shared tasks: tasks declared before (or apart from) the app.

`@router.task(...)` and `@shared_task(...)` return a `PendingTask`: the function and
its options, registered with `@app.task` on an app later (`app.include_router(router)`;
a shared task on every app of the process, as QTasks' `QueueTasks()` does). Once
registered, `add_task` and pre-built calls go through the app's own task object:
there is one registration path, `@app.task`'s.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from .registries import RegisteredTask, TaskCall


class PendingTask:
    """A task declared on a router or with `shared_task`, registered on apps later."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any], where: str) -> None:
        self.fn = fn
        self.awaiting = bool(options.pop("awaiting", False))
        self.options = options
        self.name = str(options.get("name") or getattr(fn, "__name__", "task"))
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self._where = where
        # the apps it is on, the latest last: weak, a task declared once must not keep
        # every app of the process (and their stores) alive
        self._on: list[weakref.ref[Any]] = []

    def register_on(self, app: Any) -> RegisteredTask[Any, Any]:
        registered: RegisteredTask[Any, Any] = app.task(**self.options)(self.fn)
        self.name = registered.name
        self._on.append(weakref.ref(app))
        return registered

    @property
    def registered(self) -> RegisteredTask[Any, Any]:
        self._on = [ref for ref in self._on if ref() is not None]
        app = self._on[-1]() if self._on else None
        if app is None:
            raise RuntimeError(
                f"task {self.name!r} is declared {self._where} but on no app yet; "
                + (
                    "include the router first: app.include_router(router)"
                    if self._where == "on a router"
                    else "create the app (QueueTasks()) in this process first"
                )
            )
        core = getattr(app, "core", app)
        return RegisteredTask(core.specs[self.name], self.fn, app)

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        """Add the task on its app (the latest one it is on, as in QTasks)."""
        task = self.registered
        result = task.add_task(*args, **kwargs)
        if self.awaiting and not asyncio.iscoroutine(result):
            return _done(result)  # QTasks' awaiting=True: always awaitable
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> TaskCall:
        return self.registered(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # task_name, priority, extra... of the app's task
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.registered, name)

    def __repr__(self) -> str:
        return f"<task {self.name!r} {self._where}>"


async def _done(value: Any) -> Any:
    return value


class Router:
    """QTasks' `AsyncRouter` / `SyncRouter`: `@router.task(...)`, then
    `app.include_router(router)` registers its tasks on the app."""

    def __init__(self) -> None:
        self.tasks: list[PendingTask] = []

    def task(self, fn_or_name: Any = None, /, **options: Any) -> Any:
        def declare(fn: Callable[..., Any]) -> PendingTask:
            pending = PendingTask(fn, dict(options), "on a router")
            self.tasks.append(pending)
            return pending

        if callable(fn_or_name):
            return declare(fn_or_name)
        if fn_or_name is not None:
            options["name"] = fn_or_name
        return declare

    def include_into(self, app: Any) -> None:
        for pending in self.tasks:
            pending.register_on(app)


AsyncRouter = SyncRouter = Router

# Shared tasks, and the apps of this process they are registered on.
_shared: list[PendingTask] = []
_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_latest: weakref.ref[Any] | None = None  # QTasks' app_main: the app made last


def shared_task(fn_or_name: Any = None, /, **options: Any) -> Any:
    """QTasks' `@shared_task(...)`: a task of every app of this process, those made
    before and after it; `add_task` goes through the latest one."""

    def declare(fn: Callable[..., Any]) -> PendingTask:
        pending = PendingTask(fn, dict(options), "with shared_task")
        _shared.append(pending)
        latest = _latest() if _latest is not None else None
        for app in sorted(_apps, key=lambda app: app is latest):  # the latest last
            pending.register_on(app)
        return pending

    if callable(fn_or_name):
        return declare(fn_or_name)
    if fn_or_name is not None:
        options["name"] = fn_or_name
    return declare


def attach(app: Any) -> None:
    """A new app (either facade): it gets every shared task declared so far."""
    global _latest
    _apps.add(app)
    _latest = weakref.ref(app)
    for pending in _shared:
        pending.register_on(app)


def latest_app() -> Any:
    """The app made last in this process (QTasks' `app_main`); RuntimeError if none."""
    app = _latest() if _latest is not None else None
    if app is None:
        raise RuntimeError("no QueueTasks app in this process: make one, or pass app=")
    return app


__all__ = [
    "latest_app",
    "AsyncRouter",
    "PendingTask",
    "Router",
    "SyncRouter",
    "attach",
    "shared_task",
]
