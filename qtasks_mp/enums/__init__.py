"""QTasks' `qtasks.enums`: `TaskStatusEnum` is our `TaskStatus` (the same five strings)."""

from __future__ import annotations

from .task_status import TaskStatusEnum

__all__ = ["TaskStatusEnum"]
