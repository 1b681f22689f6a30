"""qtasks_mp: background tasks with no broker, with QTasks' API.

`qtasks_mp.QueueTasks` is the sync facade (plain programs); `qtasks_mp.asyncio.QueueTasks`
the async one. Both run the same core.
"""

from typing import TYPE_CHECKING, Any

from .config import QueueConfig
from .errors import (
    AppNotRunning,
    ConfigError,
    QTasksError,
    RetriesExhausted,
    Retry,
    SerializationError,
    TaskArgumentsError,
    TaskFailed,
    TaskNotFound,
    TaskRegistrationError,
    TaskTimeout,
    WorkerCrashed,
)
from .executors import Call, Executor, InlineExecutor, ThreadExecutor
from .middleware import CallLogging, Middleware, Retries, Timing
from .registries import AsyncTask, RegisteredTask, SyncTask
from .stats import format_table
from .stores import MemoryStore, Store
from .sync import QueueTasks
from .task import Task, TaskStatus

if TYPE_CHECKING:
    from .executors.process import ProcessExecutor

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "ProcessExecutor":  # imported on first use, like the executor itself
        from .executors.process import ProcessExecutor

        return ProcessExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AppNotRunning",
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
    "Store",
    "SyncTask",
    "Task",
    "TaskArgumentsError",
    "TaskFailed",
    "TaskNotFound",
    "TaskRegistrationError",
    "TaskStatus",
    "TaskTimeout",
    "ThreadExecutor",
    "Timing",
    "WorkerCrashed",
    "format_table",
]
