"""QTasks' import path `qtasks.asyncio.qtasks.QueueTasks`."""

from __future__ import annotations

from . import QueueTasks

__all__ = ["QueueTasks"]
