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
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

if TYPE_CHECKING:
    from .task import Task

T = TypeVar("T")


class TaskHost(Protocol):
    """What a task context and a `Task` need from the app: add a task, wait for one,
    and run one of those from a thread other than the app's loop."""

    async def add_task(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Task | None: ...

    async def wait(self, uuid: UUID | str, timeout: float | None = None) -> Task | None: ...

    def call_from_thread(self, coro: Coroutine[Any, Any, T]) -> T: ...


class TaskInfo:
    """What a running task knows of itself: `task_name`, `uuid`, `attempt` (1 for the
    first run) and a `logger` tagged with the task's id. The base of every context."""

    __slots__ = ("_logger", "attempt", "task_name", "uuid")

    def __init__(self, task_name: str, uuid: UUID, attempt: int) -> None:
        self.task_name = task_name
        self.uuid = uuid
        self.attempt = attempt
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            base = logging.getLogger(f"qtasks_mp.task.{self.task_name}")
            self._logger = logging.LoggerAdapter(base, {"task_uuid": str(self.uuid)})
        return self._logger


class AsyncTask(TaskInfo):
    """The task context an `echo=True` task receives as its first argument.

    `await self.add_task(name, ...)` queues a nested task; `task_name`, `uuid`,
    `attempt` (1 for the first run) and `logger` describe the running task.
    """

    __slots__ = ("_host",)

    def __init__(self, host: TaskHost, task_name: str, uuid: UUID, attempt: int) -> None:
        super().__init__(task_name, uuid, attempt)
        self._host = host

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
        coro = self._host.add_task(name, *args, priority=priority, timeout=timeout, **kwargs)
        return self._host.call_from_thread(coro)
