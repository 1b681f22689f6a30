"""QTasks' pre-built calls: `AsyncTaskCls` and `SyncTaskCls` are our `TaskCall`."""

from __future__ import annotations

from ..registries import TaskCall

AsyncTaskCls = SyncTaskCls = BaseTaskCls = TaskCall

__all__ = ["AsyncTaskCls", "BaseTaskCls", "SyncTaskCls"]
