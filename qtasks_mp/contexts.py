"""QTasks' task context, `self.ctx` in an `echo=True` task, over our own context.

One class for async and sync tasks: `sleep`, `get_metadata` and `get_task` return a
coroutine in an `async def` task and block in a plain one, as QTasks' `AsyncContext` /
`SyncContext` do. What it reads comes from the app through the context's `TaskHost`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, NoReturn
from uuid import UUID

from .context import SyncTask
from .exc import TaskPluginTriggerError
from .logs import Logger

if TYPE_CHECKING:
    from .context import AsyncTask


def _spec(host: Any, task_name: str) -> Any:
    specs = getattr(host, "specs", None) or {}
    return specs.get(task_name)


#: QTasks' name of a task attribute -> how to read it from our TaskSpec
_ATTRIBUTES: dict[str, Any] = {
    "priority": lambda s: s.priority,
    "echo": lambda s: s.echo,
    "retry": lambda s: s.retry,
    "retry_on_exc": lambda s: s.retry_on_exc,
    "max_time": lambda s: s.timeout,
    "tags": lambda s: list(s.tags),
    "description": lambda s: s.description,
    "extra": lambda s: dict(s.options),
    "decode": lambda s: s.options.get("decode"),
    "generate_handler": lambda s: s.generate_handler,
    "executor": lambda s: s.executor,
    "middlewares": lambda s: list(s.middlewares),
    "middlewares_before": lambda s: list(s.middlewares),
    "middlewares_after": lambda s: [],
}


def task_attribute(host: Any, task_name: str, name: str) -> Any:
    """`self.priority`, `self.tags`, `self.extra`... of the running task (QTasks' names)."""
    read = _ATTRIBUTES.get(name)
    spec = _spec(host, task_name)
    if read is None or spec is None:
        raise AttributeError(
            f"the context of task {task_name!r} has no attribute {name!r}; it has "
            f"task_name, uuid, attempt, logger, ctx, add_task and {', '.join(_ATTRIBUTES)}"
        )
    return read(spec)


class TaskContext:
    """`self.ctx`: QTasks' `AsyncContext` / `SyncContext` for the running task."""

    def __init__(self, task: AsyncTask, host: Any) -> None:
        self._task = task
        self._host = host
        self._is_async = not isinstance(task, SyncTask)
        self._metadata: Any = None
        self.task_name = task.task_name
        self.task_uuid = task.uuid

    @property
    def generate_handler(self) -> Any:
        return task_attribute(self._host, self.task_name, "generate_handler")

    def get_logger(self, name: str | None = None) -> Logger:
        """A logger named after the task (or `name`)."""
        return Logger("QueueTasks", subname=name or self.task_name)

    def get_config(self) -> Any:
        """The app's `config`."""
        return self._host.config

    def _read(self, uuid: UUID | str) -> Any:
        coro = self._host.get(uuid)
        return coro if self._is_async else self._host.call_from_thread(coro)

    def get_task(self, uuid: UUID | str) -> Any:
        """The `Task` with that id (await it in an `async def` task)."""
        return self._read(uuid)

    def get_metadata(self, cache: bool = True) -> Any:
        """This task's `Task`, read once and kept when `cache` (await it in async tasks)."""
        if cache and self._metadata is not None:
            return _ready(self._metadata) if self._is_async else self._metadata
        if not self._is_async:
            self._metadata = self._read(self.task_uuid)
            return self._metadata
        return self._read_and_keep(cache)

    async def _read_and_keep(self, cache: bool) -> Any:
        task = await self._host.get(self.task_uuid)
        if cache:
            self._metadata = task
        return task

    def sleep(self, seconds: float) -> Any:
        """`asyncio.sleep` in an `async def` task (await it), `time.sleep` in a plain one."""
        if self._is_async:
            return asyncio.sleep(seconds)
        time.sleep(seconds)
        return None

    def cancel(self, reason: str = "") -> NoReturn:
        """End this task with status `cancel`, never retried: raises `TaskCancelError`."""
        self._task.cancel(reason)

    def plugin_error(self, **kwargs: Any) -> NoReturn:
        raise TaskPluginTriggerError(**kwargs)

    def get_component(self, name: str) -> Any:
        """An attribute of the app (`"config"`, `"store"`, `"executors"`), or None."""
        return getattr(self._host, name, None)


async def _ready(value: Any) -> Any:
    return value


AsyncContext = SyncContext = TaskContext

__all__ = ["AsyncContext", "SyncContext", "TaskContext", "task_attribute"]
