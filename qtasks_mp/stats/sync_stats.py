"""QTasks' import path of `SyncStats`."""

from __future__ import annotations

from . import SyncStats

__all__ = ["SyncStats"]
