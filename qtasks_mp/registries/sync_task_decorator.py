"""QTasks' import path of `SyncTask` (here: the task context of a plain-function task)."""

from __future__ import annotations

from ..context import SyncTask

__all__ = ["SyncTask"]
