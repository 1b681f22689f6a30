"""Executors: where a task's code runs. `ProcessExecutor` and `DaskExecutor` are
imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Call, Executor
from .inline import InlineExecutor
from .thread import ThreadExecutor

if TYPE_CHECKING:
    from .dask import DaskExecutor
    from .process import ProcessExecutor

__all__ = [
    "Call",
    "DaskExecutor",
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "ThreadExecutor",
]


def __getattr__(name: str) -> Any:
    if name == "ProcessExecutor":  # multiprocessing machinery only for apps that use it
        from .process import ProcessExecutor

        return ProcessExecutor
    if name == "DaskExecutor":  # Dask is an optional extra: imported only when asked for
        from .dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
