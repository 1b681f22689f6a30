"""`app.config`: typed settings that reject unknown fields (QTasks silently ignores them)."""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import ConfigError


def _default_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


#: QTasks' names of our fields
ALIASES = {
    "logs_default_level_server": "logs_default_level",
    "task_default_priority": "default_task_priority",
}

#: QTasks' fields that have no effect here (see docs/qtasks.md, "Config"), with the reason
NO_EFFECT = {
    "running_older_tasks": "a durable store always runs the tasks left from before",
    "delete_finished_tasks": "finished tasks are kept within result_retention_*",
    "task_default_decode": "results are the Python objects the task returned",
    "logs_default_level_client": "one level, logs_default_level, for the whole app",
    "logs_format": "give the root logger (or 'qtasks_mp') a handler of your own",
    "result_time_interval": "waiting is woken by the task's end, not by polling",
    "result_statuses_end": "a wait ends at success, error or cancel",
    "global_config_status_ttl": "there is no global config server",
    "global_config_status_set_periodic": "there is no global config server",
}


def _end_statuses() -> list[str]:
    return ["success", "error", "cancel"]


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

    QTasks' names are accepted too: `logs_default_level_server` and
    `task_default_priority` are ours under another name (`ALIASES`); the rest of QTasks'
    fields are kept and have no effect (`NO_EFFECT` says why). As in QTasks, an
    environment variable `QTASKS_<FIELD>` (the prefix is `environ_prefix`) sets a field
    when the config is made; a value that does not fit raises `ConfigError` naming it.
    """

    logs_default_level: int = logging.INFO
    max_tasks_process: int = 10
    thread_workers: int = _default_threads()
    default_task_priority: int = 0
    shutdown_timeout: float = 10.0
    result_retention_count: int = 10_000
    result_retention_s: float = 24 * 3600.0
    # QTasks' fields without an effect here (NO_EFFECT)
    running_older_tasks: bool = False
    delete_finished_tasks: bool = False
    task_default_decode: Callable[[Any], Any] | None = None
    logs_default_level_client: int = logging.INFO
    logs_format: str = "%(asctime)s [%(name)s: %(levelname)s] (%(subname)s) %(message)s"
    result_time_interval: float = 1.0
    result_statuses_end: list[str] = field(default_factory=_end_statuses)
    global_config_status_ttl: int = 20
    global_config_status_set_periodic: int = 17
    environ_prefix: str = "QTASKS_"

    def __post_init__(self) -> None:
        prefix = self.environ_prefix
        for var, text in sorted(os.environ.items()):
            if not var.startswith(prefix):
                continue
            name = ALIASES.get(var[len(prefix) :].lower(), var[len(prefix) :].lower())
            default = _default_of(name)
            if default is None:  # not a field of ours (e.g. QTASKS_MP_STORE): not for us
                continue
            try:
                value = _from_text(name, text, default)
            except ValueError:
                raise ConfigError(
                    f"environment variable {var}={text!r}: config field {name!r} takes "
                    f"{type(default).__name__}; fix or unset the variable"
                ) from None
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields
        if name in ALIASES:
            return getattr(self, ALIASES[name])
        raise AttributeError(f"{type(self).__name__!r} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        name = ALIASES.get(name, name)
        known = {f.name: f for f in fields(self)}
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config field {name!r}.{hint} Known fields: {', '.join(sorted(known))}."
            )
        default: Any = _default_of(name)
        if name in ("task_default_decode", "result_statuses_end"):
            if name == "task_default_decode" and value is not None and not callable(value):
                raise ConfigError(f"config field {name!r} takes a function or None, got {value!r}")
            if name == "result_statuses_end" and not isinstance(value, list):
                raise ConfigError(f"config field {name!r} takes a list of statuses, got {value!r}")
            object.__setattr__(self, name, value)
            return
        kind = float if isinstance(default, float) else type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(
                f"config field {name!r} takes a value of type {kind.__name__}, got {value!r} "
                f"({type(value).__name__}); set e.g. config.{name} = {default!r}."
            )
        if kind is float and math.isnan(value):
            raise ConfigError(f"config field {name!r} must be a number, got nan.")
        if name == "default_task_priority" and not -(2**63) <= value < 2**63:
            raise ConfigError(
                f"config field {name!r} must fit in 64 bits, got {value!r}; pass e.g. 0."
            )
        if isinstance(value, str | bool):
            object.__setattr__(self, name, value)
            return
        if name != "default_task_priority" and value < 0:
            raise ConfigError(f"config field {name!r} must not be negative, got {value!r}.")
        if name in {"max_tasks_process", "thread_workers"} and value < 1:
            raise ConfigError(f"config field {name!r} must be at least 1, got {value!r}.")
        object.__setattr__(self, name, value)


def _default_of(name: str) -> Any:
    """The default of a field (None when there is no such field)."""
    for f in fields(QueueConfig):
        if f.name == name:
            if f.default_factory is not MISSING:
                return f.default_factory()
            return None if f.default is None else f.default
    return None


def _from_text(name: str, text: str, default: Any) -> Any:
    """An environment variable's text as the field's type (ValueError if it does not fit)."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(text)
    if isinstance(default, int) and "level" in name and not text.lstrip("-").isdigit():
        level = logging.getLevelName(text.upper())
        if isinstance(level, int):
            return level
        raise ValueError(text)
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return type(default)(text)
