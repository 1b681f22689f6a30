"""QTasks' `qtasks.enums.task_status`."""

from __future__ import annotations

from ..task import TaskStatus as TaskStatusEnum

__all__ = ["TaskStatusEnum"]
