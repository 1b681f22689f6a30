"""QTasks' `qtasks.schemas.task.Task`: our `Task` snapshot."""

from __future__ import annotations

from ..task import Task

__all__ = ["Task"]
