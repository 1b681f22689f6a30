"""The task context an `echo=True` task receives as its first argument.

`TaskInfo` is what every context knows (name, id, attempt, logger). `AsyncTask` and
`SyncTask` add `add_task` for nested tasks, through a `TaskHost`: the small protocol
the app offers to what runs below it, so a context never holds the app itself.

This module imports nothing else of qtasks_mp at run time: a process worker imports
it (for its own context over `TaskInfo`) together with `wire`, and nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar
from uuid import UUID

if TYPE_CHECKING:
    from .task import Task, TaskRecord

T = TypeVar("T")


class TaskHost(Protocol):
    """What a task context and a `Task` need from the app: add a task, wait for one,
    cancel one, and run one of those from a thread other than the app's loop."""

    async def add_task(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Task | None: ...

    def add_task_awaited(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Task | None]: ...

    async def wait(self, uuid: UUID | str, timeout: float | None = None) -> Task | None: ...

    async def cancel(self, task: UUID | str | Task) -> bool: ...

    def call_from_thread(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def progress_changed(self, record: TaskRecord) -> None:
        """`record.progress` was just set (from any thread): save it, coalesced."""


class TaskInfo:
    """What a running task knows of itself: `task_name`, `uuid`, `attempt` (1 for the
    first run) and a `logger` tagged with the task's id. The base of every context.

    `cancelled` becomes True when `app.cancel()` cancelled this run while it goes on (a
    thread cannot be stopped: its function may look at it and return early; whatever
    it returns is discarded). `cancel(reason)` ends the task `cancel` from inside.
    """

    __slots__ = ("_logger", "attempt", "cancelled", "task_name", "uuid")

    def __init__(self, task_name: str, uuid: UUID, attempt: int) -> None:
        self.task_name = task_name
        self.uuid = uuid
        self.attempt = attempt
        self.cancelled = False
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    def cancel(self, reason: str = "") -> NoReturn:
        """End this task now with status `cancel` (`reason` becomes its `traceback`); it
        is not retried. Raises `TaskCancelError`: let it propagate."""
        from .errors import TaskCancelError  # a leaf module: a worker process may import it

        raise TaskCancelError(reason or f"{self.task_name}.cancel")

    @property
    def ctx(self) -> TaskInfo:
        """QTasks' spelling: `self.ctx.cancel(reason)` is `self.cancel(reason)`."""
        return self

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            base = logging.getLogger(f"qtasks_mp.task.{self.task_name}")
            self._logger = logging.LoggerAdapter(base, {"task_uuid": str(self.uuid)})
        return self._logger


_NUMBER = (int, float)


def check_progress(task_name: str, done: Any, total: Any, note: Any) -> None:
    """Raise if `self.progress(done, total, note)` got values it cannot keep."""
    if type(done) in _NUMBER and (total is None or type(total) in _NUMBER):
        if note is None or type(note) is str:
            return
        raise TypeError(
            f"task {task_name!r}: self.progress(note=...) takes a str or None, got "
            f"{type(note).__name__} {note!r:.60}; pass note=str(...)"
        )
    raise TypeError(
        f"task {task_name!r}: self.progress(done, total=None, note=None) takes numbers "
        f"(int or float) for done and total, got done={done!r:.40} "
        f"({type(done).__name__}), total={total!r:.40} ({type(total).__name__}); "
        "pass e.g. self.progress(3, total=10)"
    )


class AsyncTask(TaskInfo):
    """The task context an `echo=True` task receives as its first argument.

    `await self.add_task(name, ...)` queues a nested task; `self.progress(done, total,
    note)` says how far it is; `task_name`, `uuid`, `attempt` (1 for the first run)
    and `logger` describe the running task.
    """

    __slots__ = ("_host", "_record")

    def __init__(
        self,
        host: TaskHost,
        task_name: str,
        uuid: UUID,
        attempt: int,
        record: TaskRecord | None = None,
    ) -> None:
        super().__init__(task_name, uuid, attempt)
        self._host = host
        self._record = record

    def progress(self, done: float, total: float | None = None, note: str | None = None) -> None:
        """Say how far the task is: `done` of `total` (if known), with a short `note`.

        A plain call (not awaited), from async and plain tasks alike, cheap enough to
        call per item: the latest value wins and is saved to the store a few times a
        second (and with the outcome), so `app.get(uuid).progress`, `app.stats()`,
        `qtasks-mp tasks`, the dashboard and `qtasks-mp top` show it. Raises
        `TypeError` for values other than numbers (and a str note).
        """
        if type(done) not in _NUMBER or not (
            (total is None or type(total) in _NUMBER) and (note is None or type(note) is str)
        ):
            check_progress(self.task_name, done, total, note)
        record = self._record
        if record is not None:
            record.progress = (done, total, note)
            self._host.progress_changed(record)

    async def add_task(
        self,
        *args: Any,
        task_name: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Task | None:
        """Queue a nested task; the same arguments as `app.add_task` (`args=`, `kwargs=` too).

        The task's name comes first, or as `task_name=` (QTasks: `self.add_task(5,
        task_name="test_num")`); with neither, this task is added again.
        """
        name, args = _name_and_args(self, task_name, args)
        return await self._host.add_task(name, *args, priority=priority, timeout=timeout, **kwargs)

    @property
    def ctx(self) -> Any:
        """QTasks' task context (`self.ctx.get_logger()`, `sleep`, `get_metadata`, ...)."""
        from .contexts import TaskContext  # not in a process worker: this context is not there

        return TaskContext(self, self._host)

    def __getattr__(self, name: str) -> Any:
        """QTasks' task attributes: `self.priority`, `self.tags`, `self.extra`, ..."""
        if name.startswith("_"):
            raise AttributeError(name)
        from .contexts import task_attribute

        return task_attribute(self._host, self.task_name, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_name!r} {self.uuid} attempt={self.attempt}>"


def _name_and_args(
    context: TaskInfo, task_name: str | None, args: tuple[Any, ...]
) -> tuple[str, tuple[Any, ...]]:
    if task_name is not None:
        return task_name, args
    if args:
        return args[0], args[1:]
    return context.task_name, args


class SyncTask(AsyncTask):
    """The context a plain-function (`echo=True`) task receives: `add_task` is blocking."""

    __slots__ = ()

    def add_task(  # type: ignore[override]
        self,
        *args: Any,
        task_name: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Task | None:
        """Queue a nested task from a worker thread; blocks until it is accepted."""
        name, args = _name_and_args(self, task_name, args)
        coro = self._host.add_task_awaited(
            name, *args, priority=priority, timeout=timeout, **kwargs
        )
        return self._host.call_from_thread(coro)
