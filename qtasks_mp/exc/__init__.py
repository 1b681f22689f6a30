"""QTasks' exception names (`qtasks.exc`), within our error tree (`QTasksError`)."""

from __future__ import annotations

from typing import Any

from ..errors import QTasksError, TaskCancelError  # ours: it ends the task `cancel`


class TaskPluginTriggerError(QTasksError):
    """Raised by `self.ctx.plugin_error(**kwargs)`; the keywords are kept as `kwargs`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args)
        self.kwargs = kwargs


__all__ = ["TaskCancelError", "TaskPluginTriggerError"]
