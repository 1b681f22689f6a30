"""A task's record (what the store keeps) and `Task`, the snapshot users get back."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from .app import AppCore


class TaskStatus(str, Enum):
    """QTasks' statuses. A `str` subclass: `task.status == "success"` works."""

    NEW = "new"
    PROCESS = "process"
    SUCCESS = "success"
    ERROR = "error"
    CANCEL = "cancel"

    def __str__(self) -> str:
        return self.value


FINISHED = frozenset({TaskStatus.SUCCESS, TaskStatus.ERROR, TaskStatus.CANCEL})


class TaskRecord:
    """The mutable record a store keeps. Times are `time.time()` floats.

    `lane` is the name of the executor that runs it; `retry` counts retries done;
    `eta` is the earliest time it may run (0 = now); `seq` keeps FIFO order among
    equal priorities.
    """

    __slots__ = (
        "args",
        "created_at",
        "eta",
        "finished_at",
        "kwargs",
        "lane",
        "priority",
        "retry",
        "returning",
        "seq",
        "started_at",
        "status",
        "task_name",
        "traceback",
        "updated_at",
        "uuid",
    )

    def __init__(
        self,
        uuid: UUID,
        task_name: str,
        lane: str,
        priority: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        now: float,
    ) -> None:
        self.uuid = uuid
        self.task_name = task_name
        self.lane = lane
        self.priority = priority
        self.args = args
        self.kwargs = kwargs
        self.status = TaskStatus.NEW
        self.created_at = now
        self.updated_at = now
        self.started_at = 0.0
        self.finished_at = 0.0
        self.eta = 0.0
        self.retry = 0
        self.returning: Any = None
        self.traceback: str | None = None
        self.seq = 0

    def snapshot(self, app: AppCore | None) -> Task:
        return Task(
            status=self.status,
            uuid=self.uuid,
            priority=self.priority,
            task_name=self.task_name,
            args=self.args,
            kwargs=self.kwargs,
            created_at=datetime.fromtimestamp(self.created_at),
            updated_at=datetime.fromtimestamp(self.updated_at),
            returning=self.returning,
            traceback=self.traceback,
            retry=self.retry,
            _app=app,
        )


@dataclass(eq=False)
class Task:
    """A task as it was when this object was made (QTasks' fields).

    It does not change afterwards: call `wait_result()` / `await wait_result_async()`
    or `app.get(uuid)` for a fresh one. `retry` counts the retries done so far.
    """

    status: str
    uuid: UUID
    priority: int
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    returning: Any = None
    traceback: str | None = None
    retry: int = 0
    _app: AppCore | None = field(default=None, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    async def wait_result_async(self, timeout: float | None = None) -> Task | None:
        """Wait (no polling) until the task ends; the finished `Task`, or None on timeout."""
        return await self._require_app().wait(self.uuid, timeout)

    def wait_result(self, timeout: float | None = None) -> Task | None:
        """Blocking form of `wait_result_async`, for threads other than the app's loop."""
        app = self._require_app()
        loop = app.loop
        if loop is None:
            raise RuntimeError(f"task {self.task_name!r}: its app has not been started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or threading.current_thread().ident == app.loop_thread_id:
            raise RuntimeError(
                f"task {self.task_name!r}: wait_result() would block the app's event loop; "
                "use `await task.wait_result_async()` there"
            )
        return asyncio.run_coroutine_threadsafe(app.wait(self.uuid, timeout), loop).result()

    def _require_app(self) -> AppCore:
        if self._app is None:
            raise RuntimeError(f"task {self.task_name!r} is not attached to an app")
        return self._app
