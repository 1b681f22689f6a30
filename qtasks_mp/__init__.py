"""qtasks_mp: background tasks with no broker, with QTasks' API.

`qtasks_mp.QueueTasks` is the sync facade (plain programs); `qtasks_mp.asyncio.QueueTasks`
the async one. Both run the same core.

Every public name is imported on first use (PEP 562), so that a process worker, which
imports only `qtasks_mp.wire` and `qtasks_mp.context`, does not load the app, the
dispatcher, the stores or multiprocessing's pool machinery through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import QueueConfig
    from .context import AsyncTask, SyncTask
    from .errors import (
        AppNotRunning,
        ArgumentValueError,
        ConfigError,
        QTasksError,
        RetriesExhausted,
        Retry,
        SerializationError,
        SetupError,
        TaskArgumentsError,
        TaskCancelError,
        TaskFailed,
        TaskNotFound,
        TaskRegistrationError,
        TaskTimeout,
        WorkerCrashed,
    )
    from .executors import Call, Executor, InlineExecutor, ThreadExecutor
    from .executors.process import ProcessExecutor
    from .middleware import CallLogging, Middleware, Retries, Timing
    from .registries import RegisteredTask
    from .routers import AsyncRouter, SyncRouter, shared_task
    from .stats import format_table
    from .stores import MemoryStore, Store
    from .sync import QueueTasks
    from .task import Task, TaskProgress, TaskStatus

__version__ = "0.1.0"

#: public name -> the module that defines it
_WHERE = {
    **dict.fromkeys(
        [
            "AppNotRunning",
            "ArgumentValueError",
            "ConfigError",
            "QTasksError",
            "RetriesExhausted",
            "Retry",
            "SerializationError",
            "SetupError",
            "TaskArgumentsError",
            "TaskCancelError",
            "TaskFailed",
            "TaskNotFound",
            "TaskRegistrationError",
            "TaskTimeout",
            "WorkerCrashed",
        ],
        ".errors",
    ),
    "QueueConfig": ".config",
    "AsyncTask": ".context",
    "SyncTask": ".context",
    "Call": ".executors",
    "Executor": ".executors",
    "InlineExecutor": ".executors",
    "ThreadExecutor": ".executors",
    "ProcessExecutor": ".executors.process",
    "CallLogging": ".middleware",
    "Middleware": ".middleware",
    "Retries": ".middleware",
    "Timing": ".middleware",
    "RegisteredTask": ".registries",
    "format_table": ".stats",
    "AsyncRouter": ".routers",
    "SyncRouter": ".routers",
    "shared_task": ".routers",
    "MemoryStore": ".stores",
    "Store": ".stores",
    "QueueTasks": ".sync",
    "Task": ".task",
    "TaskStatus": ".task",
    "TaskProgress": ".task",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "AppNotRunning",
    "AsyncRouter",
    "SyncRouter",
    "shared_task",
    "ArgumentValueError",
    "AsyncTask",
    "Call",
    "CallLogging",
    "ConfigError",
    "Executor",
    "InlineExecutor",
    "MemoryStore",
    "Middleware",
    "ProcessExecutor",
    "QTasksError",
    "QueueConfig",
    "QueueTasks",
    "RegisteredTask",
    "Retries",
    "RetriesExhausted",
    "Retry",
    "SerializationError",
    "SetupError",
    "Store",
    "SyncTask",
    "Task",
    "TaskArgumentsError",
    "TaskCancelError",
    "TaskFailed",
    "TaskNotFound",
    "TaskProgress",
    "TaskRegistrationError",
    "TaskStatus",
    "TaskTimeout",
    "ThreadExecutor",
    "Timing",
    "WorkerCrashed",
    "format_table",
]
