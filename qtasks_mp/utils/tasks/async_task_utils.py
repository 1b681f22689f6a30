"""QTasks' import path of `AsyncTaskUtils`."""

from __future__ import annotations

from . import AsyncTaskUtils

__all__ = ["AsyncTaskUtils"]
