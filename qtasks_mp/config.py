"""`app.config`: typed settings that reject unknown fields (QTasks silently ignores them)."""

from __future__ import annotations

import difflib
import logging
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError


def _default_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass
class QueueConfig:
    """Settings of one app. Change them before `start()`; executors read sizes at start.

    - `logs_default_level`: level of the `qtasks_mp` logger.
    - `max_tasks_process`: how many tasks the inline executor (the event loop) runs at once.
    - `thread_workers`: size of the default thread executor.
    - `default_task_priority`: priority of a task that sets none (lower runs first).
    - `shutdown_timeout`: seconds running tasks get to finish when the app stops.
    - `result_retention_count` / `result_retention_s`: finished tasks kept for `get()`;
      the oldest are dropped past either bound, so a bot running for months stays small.
    """

    logs_default_level: int = logging.INFO
    max_tasks_process: int = 10
    thread_workers: int = _default_threads()
    default_task_priority: int = 0
    shutdown_timeout: float = 10.0
    result_retention_count: int = 10_000
    result_retention_s: float = 24 * 3600.0

    def __setattr__(self, name: str, value: Any) -> None:
        known = {f.name: f for f in fields(self)}
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config field {name!r}.{hint} Known fields: {', '.join(sorted(known))}."
            )
        default: Any = known[name].default
        kind = float if isinstance(default, float) else type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(
                f"config field {name!r} takes a value of type {kind.__name__}, got {value!r} "
                f"({type(value).__name__})."
            )
        if kind is float and math.isnan(value):
            raise ConfigError(f"config field {name!r} must be a number, got nan.")
        if name == "default_task_priority" and not -(2**63) <= value < 2**63:
            raise ConfigError(
                f"config field {name!r} must fit in 64 bits, got {value!r}; pass e.g. 0."
            )
        if name != "default_task_priority" and value < 0:
            raise ConfigError(f"config field {name!r} must not be negative, got {value!r}.")
        if name in {"max_tasks_process", "thread_workers"} and value < 1:
            raise ConfigError(f"config field {name!r} must be at least 1, got {value!r}.")
        object.__setattr__(self, name, value)
