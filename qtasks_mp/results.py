"""QTasks' `AsyncResult` / `SyncResult`: wait for a task's end by its id.

`await AsyncResult(uuid=task.uuid, app=app).result(timeout=50)` is
`await app.wait(uuid, timeout)`; `SyncResult(...).result(timeout)` on the sync app the
same, blocking. The wait is woken by the task's end (no polling). Without `app=`, the
latest app made in this process is used (QTasks' `app_main`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from .routers import latest_app
from .task import Task


class AsyncResult:
    def __init__(self, uuid: UUID | str, app: Any = None) -> None:
        self.uuid = uuid
        self.app = app if app is not None else latest_app()

    async def result(self, timeout: float = 100.0) -> Task | None:
        """The finished task, or None when `timeout` seconds pass first."""
        done: Task | None = await self.app.wait(self.uuid, timeout)
        return done


class SyncResult:
    def __init__(self, uuid: UUID | str, app: Any = None) -> None:
        self.uuid = uuid
        self.app = app if app is not None else latest_app()

    def result(self, timeout: float = 100.0) -> Task | None:
        done: Task | None = self.app.wait(self.uuid, timeout)
        return done


__all__ = ["AsyncResult", "SyncResult"]
