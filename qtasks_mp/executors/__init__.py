"""Executors: where a task's code runs. `ProcessExecutor` is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Call, Executor
from .inline import InlineExecutor
from .thread import ThreadExecutor

if TYPE_CHECKING:
    from .process import ProcessExecutor

__all__ = ["Call", "Executor", "InlineExecutor", "ProcessExecutor", "ThreadExecutor"]


def __getattr__(name: str) -> Any:
    if name == "ProcessExecutor":  # multiprocessing machinery only for apps that use it
        from .process import ProcessExecutor

        return ProcessExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
