"""QTasks' import path of `SyncTaskUtils`."""

from __future__ import annotations

from . import SyncTaskUtils

__all__ = ["SyncTaskUtils"]
