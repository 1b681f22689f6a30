"""Executors: where a task's code runs.

Every name is imported on first use (PEP 562): a process worker imports
`qtasks_mp.executors.process.worker` through this package and must not load the
executors' interface (and through it the registry and the task records) on the way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Call, Executor
    from .dask import DaskExecutor
    from .inline import InlineExecutor
    from .process import ProcessExecutor
    from .thread import ThreadExecutor

#: public name -> the module that defines it
_WHERE = {
    "Call": ".base",
    "Executor": ".base",
    "InlineExecutor": ".inline",
    "ThreadExecutor": ".thread",
    "ProcessExecutor": ".process",  # the pool machinery only for apps that use it
    "DaskExecutor": ".dask",  # Dask is an optional extra: imported only when asked for
}

__all__ = [
    "Call",
    "DaskExecutor",
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "ThreadExecutor",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
