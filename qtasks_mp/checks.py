"""Checks of what users hand in, before anything is accepted.

Pure functions: each returns the value to keep (normalised: a tuple for a list of tags,
a float for seconds, a plain `str` for a `str` subclass) or raises. Every refusal says
who (the task, or the call), what it got (the value and its type) and the fix:

    task 'send': retry_backoff must be a number of seconds >= 0, got '0.5' (a str);
    pass retry_backoff=0.5

Which error: `TaskRegistrationError` for `@app.task`; `TaskArgumentsError` (a
`TypeError`) for an argument of `add_task`, `map`, `wait` or `get` of the wrong type;
`ArgumentValueError` (a `ValueError`) for one of the right type out of range;
`SetupError` (a `TypeError`) for `QueueTasks(...)`, a middleware or an executor.

`add_task` is a hot path: its callers test the common case themselves with `type()`
identity checks and come here only when that fails, so these may take their time.
"""

from __future__ import annotations

import math
import operator
import os
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import UUID

from .errors import ArgumentValueError, SetupError, TaskArgumentsError, TaskRegistrationError

#: Priorities and counts are stored as signed 64-bit integers (msgpack, SQLite).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INF = math.inf
#: Types of a number of seconds that `add_task`/`wait` accept without calling in here.
SECONDS_TYPES = (float, int)

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def short(value: Any) -> str:
    """The value's repr, shortened (a 10,000-character tag stays a line)."""
    try:
        return _repr.repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"<an int of {value.bit_length()} bits>"


def got(value: Any) -> str:
    """`'0.5' (a str)`: the value, shortened, and its type."""
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(value, type):
        return f"{value.__qualname__} (a class)"
    return f"{short(value)} ({article} {name})"


def _number_hint(option: str, value: Any) -> str:
    """The fix for a number given as something else: `pass retry_backoff=0.5`."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                number = kind(value.strip())
            except ValueError:
                continue
            if math.isfinite(number):
                return f"pass {option}={number!r}"
    return f"pass a number, e.g. {option}=5"


def _seconds(zero_ok: bool) -> str:
    bound = "a number of seconds >= 0" if zero_ok else "a positive number of seconds"
    return f"{bound} (not inf or nan)"


def whole(value: Any) -> int | None:
    """`value` as a plain int if it is a whole number (an int, numpy's int64: anything with
    `__index__`), else None. A bool is not one: `retry=True` is a mistake, not 1."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        return None
    return operator.index(value)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (`True` is an int to Python, not a number of seconds)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------- @app.task


def registration(task: str) -> Callable[[str], TaskRegistrationError]:
    """A maker of `TaskRegistrationError`s prefixed with the task's name."""

    def fail(msg: str) -> TaskRegistrationError:
        return TaskRegistrationError(f"task {task!r}: {msg}")

    return fail


def task_function(fn: Any, name: Any) -> None:
    """What `@app.task` decorates must be callable."""
    if not callable(fn):
        label = repr(name) if isinstance(name, str) and name else "<unnamed>"
        hint = f"name={name!r}" if isinstance(name, str) and name else "name='my_task'"
        raise TaskRegistrationError(
            f"task {label}: @app.task registers a function, got {got(fn)}; put "
            f"@app.task({hint}) above a def, or pass the function: app.task({hint})(fn)"
        )


def task_name(name: Any, fn: Any) -> str:
    """The name a task is registered under: `name=`, else the function's `__name__`."""
    fn_name = getattr(fn, "__name__", None)
    where = f"@app.task on {fn_name}()" if isinstance(fn_name, str) else f"@app.task on {fn!r}"
    if name is None:
        if isinstance(fn_name, str) and fn_name:
            return fn_name
        raise TaskRegistrationError(
            f"{where}: {got(fn)} has no __name__ to name the task after; pass "
            "@app.task(name='my_task')"
        )
    if not isinstance(name, str):
        fix = f"name={str(name)!r}" if is_number(name) else "name='my_task'"
        raise TaskRegistrationError(
            f"{where}: name must be a non-empty str, got {got(name)}; pass {fix}"
        )
    if not name.strip():
        fix = f"name={fn_name!r} or leave name= out" if fn_name else "name='my_task'"
        raise TaskRegistrationError(
            f"{where}: name must be a non-empty str, got {short(name)}; pass {fix}"
        )
    return str.__str__(name)  # a StrEnum member is kept as its plain value


def flag(task: str, option: str, value: Any) -> bool:
    """True or False; None is the default, False."""
    if value is None:
        return False
    if type(value) is not bool:
        raise registration(task)(
            f"{option} must be True or False, got {got(value)}; "
            f"pass {option}=True or {option}=False"
        )
    return value


def task_priority(task: str, value: Any) -> int | None:
    if value is None:
        return None
    fail = registration(task)
    return _priority(value, fail, fail)


def count(task: str, option: str, value: Any, meaning: str) -> int | None:
    """`retry`: None, or a whole number >= 0 (not a bool)."""
    if value is None:
        return None
    fail = registration(task)
    number = whole(value)
    if number is None:
        fix = f"{option}=3"
        integral = isinstance(value, float) and value.is_integer() and value >= 0
        if integral or isinstance(value, bool) or (isinstance(value, str) and value.isdigit()):
            fix = f"{option}={int(value)}"
        raise fail(
            f"{option} must be a whole number >= 0 ({meaning}), got {got(value)}; pass {fix}"
        )
    if not 0 <= number <= INT64_MAX:
        raise fail(
            f"{option} must be a whole number >= 0 ({meaning}), got {short(value)}; "
            f"pass {option}=0 for none, or {option}=3"
        )
    return number


def seconds_option(task: str, option: str, value: Any, *, zero_ok: bool) -> float | None:
    """`timeout`, `max_time`, `retry_backoff`: None, or a finite number of seconds."""
    if value is None:
        return None
    fail = registration(task)
    what = _seconds(zero_ok)
    if not is_number(value):
        raise fail(f"{option} must be {what}, got {got(value)}; {_number_hint(option, value)}")
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        fix = f"{option}=None for no limit" if option in ("timeout", "max_time") else f"{option}=0"
        raise fail(f"{option} must be {what}, got {short(value)}; pass {fix}, or e.g. {option}=5")
    return float(value)


def exception_classes(
    fail: Callable[[str], Exception], value: Any, option: str = "retry_on_exc"
) -> tuple[type[Exception], ...] | None:
    """`retry_on_exc`: None, an `Exception` class, or a non-empty list of them."""
    if value is None:
        return None
    if isinstance(value, type):
        value = (value,)
    elif isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise fail(
            f"{option} takes exception classes, got {got(value)}; "
            f"pass {option}=[ConnectionError] (a list of classes)"
        )
    classes = tuple(value)
    if not classes:
        raise fail(
            f"{option}=[] retries on nothing; leave it out to retry on any Exception, "
            "or give retry=0 for no retry"
        )
    for e in classes:
        if not (isinstance(e, type) and issubclass(e, BaseException)):
            fix = f"{type(e).__name__} (the class)" if isinstance(e, BaseException) else "a class"
            raise fail(
                f"{option} takes exception classes, got {got(e)}; pass {fix}, "
                f"e.g. {option}=[ConnectionError]"
            )
        if not issubclass(e, Exception):
            raise fail(
                f"{option}: {e.__qualname__} is not an Exception subclass "
                "(KeyboardInterrupt, SystemExit, CancelledError end a task, they are never "
                f"retried); drop it from {option}"
            )
    return classes


def generate_handler(task: str, value: Any, is_generator: bool, kind: str) -> None:
    if value is None:
        return
    fail = registration(task)
    if not callable(value):
        raise fail(
            f"generate_handler must be callable (called once per yielded item), got "
            f"{got(value)}; pass a function, e.g. generate_handler=print"
        )
    if not is_generator:
        raise fail(
            f"generate_handler={short(value)} is only called for generator tasks, and "
            f"this is a {kind} function: it would never be called; drop generate_handler, or "
            "make the task yield its items"
        )


def middleware_list(where: str, value: Any, base: type) -> tuple[Any, ...]:
    """`middlewares=`: a list or tuple of middleware instances (not classes)."""
    if value is None:
        return ()
    if isinstance(value, base):
        raise_as = f"{where}: middlewares takes a list, got one middleware {got(value)}"
        raise _middleware_error(where, f"{raise_as}; pass middlewares=[{type(value).__name__}()]")
    if not isinstance(value, list | tuple):
        raise _middleware_error(
            where,
            f"{where}: middlewares takes a list of Middleware instances, got {got(value)}; "
            "pass e.g. middlewares=[Timing()]",
        )
    for mw in value:
        if isinstance(mw, type) and issubclass(mw, base):
            raise _middleware_error(
                where,
                f"{where}: middlewares takes Middleware instances, got the class "
                f"{mw.__qualname__}; pass {mw.__name__}() (an instance)",
            )
        if not isinstance(mw, base):
            raise _middleware_error(
                where,
                f"{where}: middlewares takes Middleware instances (subclasses of "
                f"qtasks_mp.Middleware), got {got(mw)}; subclass Middleware and pass an instance",
            )
    return tuple(value)


def _middleware_error(where: str, msg: str) -> Exception:
    return TaskRegistrationError(msg) if where.startswith("task ") else SetupError(msg)


def tag_list(task: str, value: Any) -> tuple[str, ...]:
    """`tags=`: a list (or tuple, set) of strings; one string is refused, not split."""
    if value is None:
        return ()
    fail = registration(task)
    if isinstance(value, str):
        raise fail(
            f"tags takes a list of strings, got one string {short(value)}; "
            f"pass tags=[{short(value)}]"
        )
    if isinstance(value, bytes | Mapping) or not isinstance(value, Iterable):
        raise fail(f"tags takes a list of strings, got {got(value)}; pass e.g. tags=['billing']")
    tags = tuple(value)
    for tag in tags:
        if not isinstance(tag, str):
            raise fail(
                f"tags takes a list of strings, got the tag {got(tag)}; pass tags=[{str(tag)!r}]"
            )
    return tuple(str.__str__(t) for t in tags)


def description(task: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise registration(task)(
        f"description must be a str, got {got(value)}; pass description='what it does' "
        "(or leave it out to use the docstring)"
    )


def executor_choice(task: str, value: Any, executor_base: type) -> None:
    """`executor=`: None, a name, or an `Executor` instance (never the class)."""
    if value is None or isinstance(value, str | executor_base):
        return
    fail = registration(task)
    if isinstance(value, type) and issubclass(value, executor_base):
        raise fail(
            f"executor={value.__qualname__} is a class; pass an instance, "
            f"executor={value.__name__}(), or a name such as executor='thread'"
        )
    raise fail(
        f"executor must be a name ('inline', 'thread', 'process' or one given in "
        f"QueueTasks(executors=...)) or an Executor instance, got {got(value)}; "
        "pass e.g. executor='thread'"
    )


# ---------------------------------------------------------------- add_task, map, wait, get


def _priority(
    value: Any, type_error: Callable[[str], Exception], value_error: Callable[[str], Exception]
) -> int:
    number = whole(value)
    if number is None:
        fix = "priority=0 or another int"
        integral = isinstance(value, float) and value.is_integer()
        if integral or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            fix = f"priority={int(value)}"
        raise type_error(
            f"priority must be an int (lower runs first), got {got(value)}; pass {fix}"
        )
    if not INT64_MIN <= number <= INT64_MAX:
        raise value_error(
            f"priority must fit in 64 bits ({INT64_MIN} to {INT64_MAX}), got {short(value)}; "
            "pass a smaller int, e.g. priority=0"
        )
    return number


def call_priority(task: Any, value: Any) -> int:
    """`add_task(priority=)` that is not a plain int in range."""
    return _priority(
        value,
        lambda msg: TaskArgumentsError(f"task {task!r}: {msg}"),
        lambda msg: ArgumentValueError(f"task {task!r}: {msg}"),
    )


def wait_seconds(who: str, value: Any, *, zero_ok: bool, none_means: str) -> float:
    """A `timeout=` to wait: a finite number of seconds > 0 (>= 0 for `wait`)."""
    what = _seconds(zero_ok)
    if not is_number(value):
        raise TaskArgumentsError(
            f"{who}: timeout must be {what}, got {got(value)}; "
            f"{_number_hint('timeout', value)} (or timeout=None to {none_means})"
        )
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        raise ArgumentValueError(
            f"{who}: timeout must be {what}, got {short(value)}; "
            f"pass e.g. timeout=5, or timeout=None to {none_means}"
        )
    return float(value)


def call_task_name(value: Any, where: str) -> str:
    """`add_task(task_name)` that is not a plain `str`: a `str` subclass, or a mistake."""
    if isinstance(value, str):
        return str.__str__(value)
    name = getattr(value, "name", None)
    spec = getattr(value, "spec", None)
    if isinstance(name, str) and spec is not None:  # a RegisteredTask (what @app.task returned)
        raise TaskArgumentsError(
            f"{where} takes the task's name, got the task object {value!r}; pass {name!r} "
            f"(its .name): {where}({name!r}, ...)"
        )
    raise TaskArgumentsError(
        f"{where} takes the registered task's name (a str) first, got {got(value)}; "
        f"pass the name you registered, e.g. {where}('send_reminder', ...)"
    )


def call_args(task: str, value: Any) -> tuple[Any, ...]:
    """`add_task(args=...)`: a tuple or a list of positional arguments (or None)."""
    if value is None:
        return ()
    if type(value) is tuple:
        return value
    if isinstance(value, list | tuple):
        return tuple(value)
    raise TaskArgumentsError(
        f"task {task!r}: args= takes a tuple or list of positional arguments, got "
        f"{got(value)}; pass args=({short(value)},) for one argument"
    )


def call_kwargs(task: str, value: Any) -> dict[str, Any]:
    """`add_task(kwargs=...)`: a mapping of parameter names (str) to values (or None)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TaskArgumentsError(
            f"task {task!r}: kwargs= takes a dict of keyword arguments, got {got(value)}; "
            "pass e.g. kwargs={'text': 'hi'}"
        )
    for key in value:
        if not isinstance(key, str):
            raise TaskArgumentsError(
                f"task {task!r}: kwargs= keys must be parameter names (str), got the key "
                f"{got(key)}; pass kwargs={{{str(key)!r}: ...}}"
            )
    return dict(value)


def chunksize(task: str, value: Any) -> int:
    number = whole(value)
    if number is None:
        raise TaskArgumentsError(
            f"map({task!r}): chunksize must be an int >= 1 (items per task), got "
            f"{got(value)}; pass chunksize=1, or e.g. chunksize=100"
        )
    if number < 1:
        raise ArgumentValueError(
            f"map({task!r}): chunksize must be an int >= 1 (items per task), got {short(value)}; "
            "pass chunksize=1 for one task per item"
        )
    return number


def progress(task: str, value: Any) -> None:
    if type(value) is bool or (callable(value) and not isinstance(value, type)):
        return
    raise TaskArgumentsError(
        f"map({task!r}): progress must be True, False or a callable(done, total), got "
        f"{got(value)}; pass progress=True for a line on stderr"
    )


def iterable(task: str, value: Any) -> None:
    if isinstance(value, Iterable):
        return
    try:
        iter(value)  # a __getitem__ sequence
    except TypeError:
        raise TaskArgumentsError(
            f"map({task!r}): takes an iterable of items (one task call each), got "
            f"{got(value)}; pass a list, e.g. app.map({task!r}, [{short(value)}])"
        ) from None


def task_ref(value: Any, where: str) -> UUID:
    """A task's id, or a `Task` (its id is taken)."""
    uuid = getattr(value, "uuid", None)
    if isinstance(uuid, UUID) and not isinstance(value, UUID | str):
        return task_id(uuid, where)
    return task_id(value, where)


def task_id(value: Any, where: str) -> UUID:
    """A task's id: a `UUID`, or its string form."""
    if type(value) is UUID:
        return value
    if isinstance(value, UUID):
        return UUID(int=value.int)
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ArgumentValueError(
                f"{where}: uuid must be a task id (a UUID or its string), got {short(value)}, "
                "which is not a UUID; pass task.uuid of the Task add_task returned"
            ) from None
    uuid = getattr(value, "uuid", None)
    if isinstance(uuid, UUID):  # a Task
        raise TaskArgumentsError(
            f"{where}: uuid must be a task id, got the Task {short(value)}; pass its "
            f"id: {where}(task.uuid)"
        )
    raise TaskArgumentsError(
        f"{where}: uuid must be a task id (a UUID or its string), got {got(value)}; pass "
        "task.uuid of the Task add_task returned"
    )


# ---------------------------------------------------------------- QueueTasks(...)


def app_arguments(
    name: Any,
    store: Any,
    config: Any,
    middlewares: Any,
    executors: Any,
    *,
    config_type: type,
    store_type: type,
    middleware_type: type,
    executor_type: type,
) -> None:
    """The arguments of `QueueTasks(...)`. Each `executors` entry is checked again when it
    is added (`TaskRegistry.add_executor`)."""
    if not isinstance(name, str) or not name.strip():
        fix = f"name={str(name)!r}" if is_number(name) else "name='my_app'"
        raise (ArgumentValueError if isinstance(name, str) else SetupError)(
            f"QueueTasks(name=...): the app's name must be a non-empty str, got {got(name)}; "
            f"pass {fix}"
        )
    if store is not None and not isinstance(store, str | os.PathLike | store_type):
        if isinstance(store, type) and issubclass(store, store_type):
            fix = f"store={store.__name__}(...) (an instance)"
        else:
            fix = "store='tasks.db' or store=SQLiteStore('tasks.db')"
        raise SetupError(
            f"app {name!r}: store= takes a Store, a path to a SQLite file or "
            f"'sqlite:///path.db', got {got(store)}; pass {fix}"
        )
    if config is not None and not isinstance(config, config_type):
        fix = "QueueConfig(**...)" if isinstance(config, Mapping) else "QueueConfig()"
        raise SetupError(
            f"app {name!r}: config= takes a QueueConfig, got {got(config)}; pass config={fix}, "
            "or set fields on app.config"
        )
    middleware_list(f"app {name!r}", middlewares, middleware_type)
    if executors is not None:
        if not isinstance(executors, Mapping):
            raise SetupError(
                f"app {name!r}: executors= takes a dict of names to Executor instances, got "
                f"{got(executors)}; pass e.g. executors={{'gpu': MyExecutor()}}"
            )
        for key, executor in executors.items():
            executor_entry(key, executor, executor_type)


def executor_entry(key: Any, executor: Any, executor_type: type) -> None:
    """One `executors={key: executor}` entry, or an executor added to the app by a task."""
    if not isinstance(key, str) or not key.strip():
        raise SetupError(
            f"executors= keys are the executors' names (non-empty str), got {got(key)}; "
            "pass e.g. executors={'gpu': MyExecutor()}"
        )
    if isinstance(executor, type) and issubclass(executor, executor_type):
        raise SetupError(
            f"executors[{key!r}] is the class {executor.__qualname__}; pass an instance: "
            f"executors={{{key!r}: {executor.__name__}()}}"
        )
    if not isinstance(executor, executor_type):
        raise SetupError(
            f"executors[{key!r}] must be an Executor instance, got {got(executor)}; subclass "
            "qtasks_mp.Executor and pass an instance"
        )


# ---------------------------------------------------------------- unique tasks, rate limits

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_limit(task: str, value: Any) -> float | None:
    """`@app.task(rate_limit="30/s")` (also `/m`, `/h`): the seconds between starts."""
    if value is None:
        return None
    fail = registration(task)
    if not isinstance(value, str):
        raise fail(
            f"rate_limit must be a str such as '30/s', '100/m' or '500/h', got {got(value)}; "
            "pass rate_limit='30/s'"
        )
    count, _, per = value.strip().partition("/")
    try:
        n = float(count)
    except ValueError:
        n = math.nan
    unit = _PER.get(per.strip())
    if unit is None or not (0 < n < INF):
        raise fail(
            f"rate_limit={value!r} is not a rate: give calls per second, minute or hour, "
            "a number > 0 then /s, /m or /h, e.g. rate_limit='30/s' or rate_limit='100/m'"
        )
    return unit / n


def unique_key(task: str, value: Any) -> str:
    """`add_task(..., unique_key=...)`: a str (or None: not unique)."""
    if isinstance(value, str):
        return str.__str__(value)
    raise TaskArgumentsError(
        f"task {task!r}: unique_key= takes a str naming the work (e.g. 'order-42'), got "
        f"{got(value)}; pass unique_key=str(...) or leave it out"
    )
