"""QTasks' import path of `AsyncTask` (here: the task context of an `async def` task)."""

from __future__ import annotations

from ..context import AsyncTask

__all__ = ["AsyncTask"]
