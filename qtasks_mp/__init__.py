"""qtasks_mp: background tasks with no broker, with QTasks' API.

`qtasks_mp.QueueTasks` is the sync facade (plain programs); `qtasks_mp.asyncio.QueueTasks`
the async one. Both run the same core.
"""

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

__version__ = "0.1.0"

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
