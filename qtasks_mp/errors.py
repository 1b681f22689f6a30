"""One error tree, rooted at `QTasksError`.

Errors a user can cause name the task (or the config field) and say how to fix it.
Several also subclass the builtin a caller would naturally catch: a bad argument list
is a `TypeError`, an unknown task name a `KeyError`, a timeout a `TimeoutError`.
"""

from __future__ import annotations

import signal as _signal


class QTasksError(Exception):
    """Base of every error qtasks_mp raises on purpose."""


class ConfigError(QTasksError, AttributeError):
    """An unknown config field, or a value of the wrong kind."""


class TaskRegistrationError(QTasksError, TypeError):
    """`@app.task` got something it cannot register: a duplicate name, an unknown option."""


class TaskNotFound(QTasksError, KeyError):
    """`add_task` named a task that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class TaskArgumentsError(QTasksError, TypeError):
    """The arguments given to `add_task` do not bind to the task function's signature, or an
    argument of `add_task`, `map`, `wait` or `get` has the wrong type (`priority=True`)."""


class ArgumentValueError(QTasksError, ValueError):
    """An argument of the right type but out of range: a negative or NaN `timeout`,
    `chunksize=0`, a task id string that is not a UUID. Nothing was accepted."""


class SetupError(QTasksError, TypeError):
    """`QueueTasks(...)`, a middleware or an executor was built from an argument of the wrong
    type: a class where an instance is needed, a dict where a `QueueConfig` is."""


class AppNotRunning(QTasksError, RuntimeError):
    """The app was asked for something that needs a running (or not yet stopped) app."""


class Retry(QTasksError):
    """Raise inside a task (or let the `Retries` middleware raise it) to run it again later.

    `delay_s` is how long to wait before the next attempt. The task goes back to the
    store with that ETA; no executor slot is held while it waits. It counts against
    the task's `retry=` limit.
    """

    def __init__(self, delay_s: float = 0.0, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s:.3f}s")
        self.delay_s = delay_s


class RetriesExhausted(QTasksError):
    """A task raised `Retry` after using all the retries its `retry=` allows."""


class TaskTimeout(QTasksError, TimeoutError):
    """A task ran past its `timeout`. `detail` says what happened to the running code."""

    def __init__(self, task_name: str, timeout_s: float, detail: str) -> None:
        super().__init__(f"task {task_name!r} exceeded its timeout of {timeout_s:g}s: {detail}")
        self.task_name = task_name
        self.timeout_s = timeout_s


class TaskCancelError(QTasksError, RuntimeError):
    """A task was cancelled: by `app.cancel()` (or the CLI, the dashboard), or by itself,
    raising it through its context's `self.cancel(reason)` (QTasks' `self.ctx.cancel`).

    It ends the task with status `cancel`, its message as the task's `traceback`; the
    `Retries` middleware never retries it.
    """

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class TaskFailed(QTasksError):
    """A task ended with an error; the remote traceback text is kept as `__cause__`'s text."""

    def __init__(self, task_name: str, traceback: str | None) -> None:
        last = (traceback or "").strip().splitlines()[-1:] or ["unknown error"]
        super().__init__(f"task {task_name!r} failed: {last[0]}")
        self.task_name = task_name
        self.traceback = traceback


class WorkerCrashed(QTasksError):
    """The worker process running a call died; `exitcode` or `signal` says how."""

    def __init__(self, task_name: str, exitcode: int | None, because: str | None = None) -> None:
        self.exitcode = exitcode
        self.signal: int | None = -exitcode if exitcode is not None and exitcode < 0 else None
        if self.signal is not None:
            try:
                how = f"killed by signal {_signal.Signals(self.signal).name}"
            except ValueError:
                how = f"killed by signal {self.signal}"
        else:
            how = f"exited with code {exitcode}"
        if because is not None:  # killed on purpose (`because` says why)
            how = f"killed, {because}" + ("" if exitcode is None else f" ({how})")
        super().__init__(f"the worker running task {task_name!r} died: {how}")
        self.task_name = task_name


class SerializationError(QTasksError, TypeError):
    """An argument or a result of a task could not cross a process boundary."""
