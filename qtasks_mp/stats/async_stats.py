"""QTasks' import path of `AsyncStats`."""

from __future__ import annotations

from . import AsyncStats

__all__ = ["AsyncStats"]
