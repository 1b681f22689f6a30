"""Bad input refused at the door: one row per refused input of docs/tasks.md.

Each row gives the input, the error type, and three fragments the message must hold:
who (the task, or the call), the value as given, and the fix. Every row also checks
that nothing was accepted: no task registered, no executor added, no record in the
store, `app.stats()` unchanged.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from qtasks_mp import (
    CallLogging,
    ConfigError,
    InlineExecutor,
    Middleware,
    QueueConfig,
    Retries,
    TaskArgumentsError,
    TaskNotFound,
    TaskRegistrationError,
    ThreadExecutor,
    Timing,
)
from qtasks_mp import checks as checks_module
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.errors import ArgumentValueError, QTasksError, SetupError
from qtasks_mp.executors.base import Executor
from qtasks_mp.stores.base import Store
from qtasks_mp.stores.memory import MemoryStore


@dataclass(frozen=True)
class Row:
    """One refused input: `act(app)` must raise `error` with `who`, `value` and `fix` in
    its message."""

    act: Callable[[QueueTasks], Any]
    error: type[Exception]
    who: str
    value: str
    fix: str


async def send(chat_id: int, text: str) -> str:
    return f"{chat_id}:{text}"


async def nap(timeout: float) -> None: ...


async def take_anything(value: object) -> None: ...


def double(x: int) -> int:
    return 2 * x


class NoContext(InlineExecutor):
    """An executor that runs code elsewhere, so it cannot hand it the task context."""

    supports_context = False


async def _with_context(self: Any) -> None: ...


class Audit(Middleware):
    """A middleware that declares an option and refuses a value it cannot use."""

    options = frozenset({"audit_channel"})

    def check_options(self, task_name: str, options: Mapping[str, Any]) -> None:
        channel = options.get("audit_channel")
        if channel is not None and not str(channel).startswith("#"):
            raise TaskRegistrationError(
                f"task {task_name!r}: audit_channel must start with '#', got {channel!r}; "
                f"pass audit_channel='#{channel}'"
            )

    async def __call__(self, call: Any, call_next: Any) -> Any:
        return await call_next(call)


def reg(**opts: Any) -> Callable[[QueueTasks], Any]:
    """Register `send` with these options."""
    return lambda app: app.task(**opts)(send)


def reg_fn(fn: Any, **opts: Any) -> Callable[[QueueTasks], Any]:
    return lambda app: app.task(**opts)(fn)


REGISTRATION: dict[str, Row] = {
    # the function and its name
    "non-callable": Row(
        lambda app: app.task(name="x")(42),
        TaskRegistrationError,
        "task 'x'",
        "42 (an int)",
        "app.task(name='x')(fn)",
    ),
    "name not a str": Row(
        reg(name=123), TaskRegistrationError, "send()", "123 (an int)", "pass name='123'"
    ),
    "empty name": Row(reg(name=""), TaskRegistrationError, "send()", "''", "name='send'"),
    "first argument neither name nor function": Row(
        lambda app: app.task(42), TaskRegistrationError, "app.task(", "42 (an int)", "@app.task("
    ),
    "name ending in .map": Row(
        reg(name="report.map"),
        TaskRegistrationError,
        "task 'report.map'",
        "'.map'",
        "name='report_map'",
    ),
    "name given twice": Row(
        lambda app: app.task("a", name="b")(send),
        TaskRegistrationError,
        "task 'a'",
        "name='b'",
        "pass it once",
    ),
    "duplicate name": Row(
        lambda app: (app.task(name="twin")(double), app.task(name="twin")(send)),
        TaskRegistrationError,
        "task 'twin'",
        "test_bad_input.double",
        "another name=",
    ),
    "unknown option": Row(
        reg(retyr=3), TaskRegistrationError, "task 'send'", "'retyr'", "did you mean 'retry'"
    ),
    # priority
    "priority=True": Row(
        reg(priority=True),
        TaskRegistrationError,
        "task 'send'",
        "True (a bool)",
        "priority=0 or another int",
    ),
    "priority='1'": Row(
        reg(priority="1"), TaskRegistrationError, "task 'send'", "'1' (a str)", "priority=1"
    ),
    "priority=2.0": Row(
        reg(priority=2.0), TaskRegistrationError, "task 'send'", "2.0 (a float)", "priority=2"
    ),
    "priority=2**63": Row(
        reg(priority=2**63), TaskRegistrationError, "task 'send'", str(2**63), "priority=0"
    ),
    # echo
    "echo='yes'": Row(
        reg(echo="yes"), TaskRegistrationError, "task 'send'", "'yes' (a str)", "echo=False"
    ),
    "echo=1": Row(reg(echo=1), TaskRegistrationError, "task 'send'", "1 (an int)", "echo=True"),
    # retry, retry_on_exc, retry_backoff (checked by the Retries middleware too)
    "retry=True": Row(
        reg(retry=True), TaskRegistrationError, "task 'send'", "True (a bool)", "retry=1"
    ),
    "retry=-1": Row(reg(retry=-1), TaskRegistrationError, "task 'send'", "-1", "retry=0"),
    "retry=2.0": Row(
        reg(retry=2.0), TaskRegistrationError, "task 'send'", "2.0 (a float)", "retry=2"
    ),
    "retry='3'": Row(
        reg(retry="3"), TaskRegistrationError, "task 'send'", "'3' (a str)", "retry=3"
    ),
    "retry_on_exc a string": Row(
        reg(retry=1, retry_on_exc="ValueError"),
        TaskRegistrationError,
        "task 'send'",
        "'ValueError' (a str)",
        "retry_on_exc=[ConnectionError]",
    ),
    "retry_on_exc an instance": Row(
        reg(retry=1, retry_on_exc=[ValueError("x")]),
        TaskRegistrationError,
        "task 'send'",
        "ValueError('x')",
        "pass ValueError (the class)",
    ),
    "retry_on_exc empty": Row(
        reg(retry=1, retry_on_exc=[]),
        TaskRegistrationError,
        "task 'send'",
        "retry_on_exc=[]",
        "leave it out",
    ),
    "retry_on_exc not an Exception": Row(
        reg(retry=1, retry_on_exc=[KeyboardInterrupt]),
        TaskRegistrationError,
        "task 'send'",
        "KeyboardInterrupt",
        "drop it from retry_on_exc",
    ),
    "retry_on_exc without retry": Row(
        reg(retry_on_exc=[ConnectionError]),
        TaskRegistrationError,
        "task 'send'",
        "retry_on_exc=[ConnectionError]",
        "add retry=3",
    ),
    "retry_backoff='0.5'": Row(
        reg(retry=1, retry_backoff="0.5"),
        TaskRegistrationError,
        "task 'send'",
        "'0.5' (a str)",
        "pass retry_backoff=0.5",
    ),
    "retry_backoff=-1": Row(
        reg(retry=1, retry_backoff=-1),
        TaskRegistrationError,
        "task 'send'",
        "-1",
        "retry_backoff=0",
    ),
    "retry_backoff=nan": Row(
        reg(retry=1, retry_backoff=math.nan),
        TaskRegistrationError,
        "task 'send'",
        "nan",
        "retry_backoff=0",
    ),
    "retry_backoff=True": Row(
        reg(retry=1, retry_backoff=True),
        TaskRegistrationError,
        "task 'send'",
        "True (a bool)",
        "retry_backoff=5",
    ),
    "retry_backoff without retry": Row(
        reg(retry_backoff=2),
        TaskRegistrationError,
        "task 'send'",
        "retry_backoff=2.0",
        "add retry=3",
    ),
    # timeout, max_time
    "timeout=-1": Row(
        reg(timeout=-1), TaskRegistrationError, "task 'send'", "-1", "timeout=None for no limit"
    ),
    "timeout=0": Row(reg(timeout=0), TaskRegistrationError, "task 'send'", "got 0", "timeout=5"),
    "timeout=nan": Row(
        reg(timeout=math.nan), TaskRegistrationError, "task 'send'", "nan", "timeout=None"
    ),
    "timeout=inf": Row(
        reg(timeout=math.inf), TaskRegistrationError, "task 'send'", "inf", "timeout=None"
    ),
    "timeout='5'": Row(
        reg(timeout="5"), TaskRegistrationError, "task 'send'", "'5' (a str)", "pass timeout=5"
    ),
    "timeout=True": Row(
        reg(timeout=True), TaskRegistrationError, "task 'send'", "True (a bool)", "timeout=5"
    ),
    "max_time=-1": Row(
        reg(max_time=-1), TaskRegistrationError, "task 'send'", "-1", "max_time=None"
    ),
    "timeout and max_time": Row(
        reg(timeout=1, max_time=2),
        TaskRegistrationError,
        "task 'send'",
        "max_time=2",
        "drop max_time=",
    ),
    # generate_handler
    "generate_handler not callable": Row(
        reg(generate_handler=3),
        TaskRegistrationError,
        "task 'send'",
        "3 (an int)",
        "generate_handler=print",
    ),
    "generate_handler on a coroutine": Row(
        reg(generate_handler=print),
        TaskRegistrationError,
        "task 'send'",
        "generate_handler=<built-in function print>",
        "drop generate_handler",
    ),
    # executor
    "executor unknown name": Row(
        reg(executor="gpu"),
        TaskRegistrationError,
        "task 'send'",
        "'gpu'",
        "QueueTasks(executors={...})",
    ),
    "executor a class": Row(
        reg(executor=ThreadExecutor),
        TaskRegistrationError,
        "task 'send'",
        "executor=ThreadExecutor",
        "executor=ThreadExecutor()",
    ),
    "executor of another type": Row(
        reg(executor=3), TaskRegistrationError, "task 'send'", "3 (an int)", "executor='thread'"
    ),
    "executor that cannot run the kind": Row(
        reg(executor="thread"),
        TaskRegistrationError,
        "task 'send'",
        "coroutine",
        "drop executor='thread'",
    ),
    "executor instance that cannot run the kind": Row(
        reg(executor=ThreadExecutor()),
        TaskRegistrationError,
        "task 'send'",
        "ThreadExecutor",
        "executor='inline'",
    ),
    "echo=True on an executor that cannot pass the context": Row(
        lambda app: app.task(name="ctx", echo=True, executor=NoContext())(_with_context),
        TaskRegistrationError,
        "task 'ctx'",
        "echo=True",
        "drop echo=True",
    ),
    # middlewares, tags, description, middleware-declared options
    "middlewares=[Timing] (a class)": Row(
        reg(middlewares=[Timing]), TaskRegistrationError, "task 'send'", "Timing", "pass Timing()"
    ),
    "middlewares=Timing() (not a list)": Row(
        reg(middlewares=Timing()),
        TaskRegistrationError,
        "task 'send'",
        "Timing",
        "middlewares=[Timing()]",
    ),
    "middlewares with a non-middleware": Row(
        reg(middlewares=[print]),
        TaskRegistrationError,
        "task 'send'",
        "<built-in function print>",
        "subclass Middleware",
    ),
    "tags='billing'": Row(
        reg(tags="billing"), TaskRegistrationError, "task 'send'", "'billing'", "tags=['billing']"
    ),
    "tags with a non-str": Row(
        reg(tags=["shop", 7]), TaskRegistrationError, "task 'send'", "7 (an int)", "tags=['7']"
    ),
    "tags not a list": Row(
        reg(tags=5), TaskRegistrationError, "task 'send'", "5 (an int)", "tags=['billing']"
    ),
    "description not a str": Row(
        reg(description=5),
        TaskRegistrationError,
        "task 'send'",
        "5 (an int)",
        "description='what it does'",
    ),
    "rate_limit='fast'": Row(
        reg(rate_limit="fast"), TaskRegistrationError, "task 'send'", "'fast'", "rate_limit='30/s'"
    ),
    "rate_limit='0/s'": Row(
        reg(rate_limit="0/s"), TaskRegistrationError, "task 'send'", "'0/s'", "rate_limit='30/s'"
    ),
    "rate_limit=30": Row(
        reg(rate_limit=30), TaskRegistrationError, "task 'send'", "30 (an int)", "rate_limit='30/s'"
    ),
    "unique='yes'": Row(
        reg(unique="yes"), TaskRegistrationError, "task 'send'", "'yes' (a str)", "unique=True"
    ),
    "middleware-declared option refused by its middleware": Row(
        reg(middlewares=[Audit()], audit_channel="ops"),
        TaskRegistrationError,
        "task 'send'",
        "'ops'",
        "audit_channel='#ops'",
    ),
}


def _snapshot(app: QueueTasks) -> tuple[Any, ...]:
    return (dict(app.specs), dict(app.executors), app.stats())


@pytest.mark.parametrize("row", REGISTRATION.values(), ids=REGISTRATION.keys())
def test_registration_refused(row: Row) -> None:
    app = QueueTasks("test")
    before = _snapshot(app)
    with pytest.raises(row.error) as info:
        row.act(app)
    _assert_message(info.value, row)
    after = _snapshot(app)
    if before[0] != after[0]:  # the duplicate row registers its first task on purpose
        assert set(after[0]) - set(before[0]) == {"twin"}
        assert app.specs["twin"].fn is double
    assert after[1] == before[1]  # no executor joined the app
    assert after[2] == before[2]


def _assert_message(error: BaseException, row: Row) -> None:
    assert isinstance(error, QTasksError)
    message = str(error)
    for part, what in ((row.who, "who"), (row.value, "value"), (row.fix, "fix")):
        assert part in message, f"the message does not name the {what} ({part!r}): {message}"


# ---------------------------------------------------------------- add_task, map, wait, get


def add(*args: Any, **kwargs: Any) -> Callable[[QueueTasks], Awaitable[Any]]:
    return lambda app: app.add_task(*args, **kwargs)


CALLS: dict[str, Row] = {
    # task_name
    "add_task(123)": Row(
        add(123), TaskArgumentsError, "add_task", "123 (an int)", "pass the name you registered"
    ),
    "add_task(None)": Row(
        add(None), TaskArgumentsError, "add_task", "None (a NoneType)", "add_task('send_reminder'"
    ),
    "add_task(the task object)": Row(
        lambda app: app.add_task(app.task(name="other")(double), 1),
        TaskArgumentsError,
        "add_task",
        "<task 'other'",
        "pass 'other' (its .name)",
    ),
    "add_task(unknown name)": Row(
        add("sned", 1, "x"), TaskNotFound, "task 'sned'", "'sned'", "Did you mean 'send'?"
    ),
    "add_task(unique_key=42)": Row(
        add("send", 1, "x", unique_key=42),
        TaskArgumentsError,
        "task 'send'",
        "42 (an int)",
        "unique_key=str(...)",
    ),
    "add_task(unique_key=bytes)": Row(
        add("send", 1, "x", unique_key=b"order-42"),
        TaskArgumentsError,
        "task 'send'",
        "b'order-42' (a bytes)",
        "unique_key=str(...)",
    ),
    "add_task(unique task, an argument without a key)": Row(
        lambda app: app.add_task(
            app.task(name="keyed", unique=True)(take_anything).name, threading.Lock()
        ),
        TaskArgumentsError,
        "task 'keyed' (unique=True)",
        "lock",
        "unique_key='...'",
    ),
    # timeout (to wait)
    "add_task(timeout=-1)": Row(
        add("send", 1, "x", timeout=-1),
        ArgumentValueError,
        "task 'send'",
        "got -1",
        "timeout=None to return at once",
    ),
    "add_task(timeout=0)": Row(
        add("send", 1, "x", timeout=0), ArgumentValueError, "task 'send'", "got 0", "timeout=5"
    ),
    "add_task(timeout=nan)": Row(
        add("send", 1, "x", timeout=math.nan),
        ArgumentValueError,
        "task 'send'",
        "nan",
        "timeout=5",
    ),
    "add_task(timeout=inf)": Row(
        add("send", 1, "x", timeout=math.inf),
        ArgumentValueError,
        "task 'send'",
        "inf",
        "timeout=None",
    ),
    "add_task(timeout='5')": Row(
        add("send", 1, "x", timeout="5"),
        TaskArgumentsError,
        "task 'send'",
        "'5' (a str)",
        "pass timeout=5",
    ),
    "add_task(timeout=True)": Row(
        add("send", 1, "x", timeout=True),
        TaskArgumentsError,
        "task 'send'",
        "True (a bool)",
        "timeout=5",
    ),
    # priority
    "add_task(priority=True)": Row(
        add("send", 1, "x", priority=True),
        TaskArgumentsError,
        "task 'send'",
        "True (a bool)",
        "priority=0 or another int",
    ),
    "add_task(priority='1')": Row(
        add("send", 1, "x", priority="1"),
        TaskArgumentsError,
        "task 'send'",
        "'1' (a str)",
        "priority=1",
    ),
    "add_task(priority=1.5)": Row(
        add("send", 1, "x", priority=1.5),
        TaskArgumentsError,
        "task 'send'",
        "1.5 (a float)",
        "priority=0",
    ),
    "add_task(priority=2**63)": Row(
        add("send", 1, "x", priority=2**63),
        ArgumentValueError,
        "task 'send'",
        str(2**63),
        "priority=0",
    ),
    # args=, kwargs=
    "add_task(args='ab')": Row(
        add("send", args="ab"), TaskArgumentsError, "task 'send'", "'ab' (a str)", "args=('ab',)"
    ),
    "add_task(args=5)": Row(
        add("send", args=5), TaskArgumentsError, "task 'send'", "5 (an int)", "args=(5,)"
    ),
    "add_task(args={...})": Row(
        add("send", args={"chat_id": 1}),
        TaskArgumentsError,
        "task 'send'",
        "{'chat_id': 1} (a dict)",
        "args=(",
    ),
    "add_task(1, args=(...))": Row(
        add("send", 1, args=(2, "x")),
        TaskArgumentsError,
        "task 'send'",
        "args=(2, 'x')",
        "not both",
    ),
    "add_task(kwargs=pairs)": Row(
        add("send", 1, kwargs=[("text", "x")]),
        TaskArgumentsError,
        "task 'send'",
        "[('text', 'x')] (a list)",
        "kwargs={'text': 'hi'}",
    ),
    "add_task(kwargs={1: ...})": Row(
        add("send", 1, kwargs={1: "x"}),
        TaskArgumentsError,
        "task 'send'",
        "1 (an int)",
        "kwargs={'1': ...}",
    ),
    "add_task(text=, kwargs={text:})": Row(
        add("send", 1, text="a", kwargs={"text": "b"}),
        TaskArgumentsError,
        "task 'send'",
        "['text']",
        "pass each once",
    ),
    # the bound arguments
    "add_task(missing argument)": Row(
        add("send", 1),
        TaskArgumentsError,
        "task 'send'",
        "missing a required argument: 'text'",
        "Fix the add_task call",
    ),
    "add_task(too many)": Row(
        add("send", 1, "x", "y"),
        TaskArgumentsError,
        "task 'send'",
        "too many positional arguments",
        "Fix the add_task call",
    ),
    "add_task(unknown keyword)": Row(
        add("send", 1, "x", txt="y"),
        TaskArgumentsError,
        "task 'send'",
        "unexpected keyword argument 'txt'",
        "Fix the add_task call",
    ),
    "add_task(timeout= meant for the task)": Row(
        add("nap", timeout=5),
        TaskArgumentsError,
        "task 'nap'",
        "missing a required argument: 'timeout'",
        "kwargs={'timeout': ...}",
    ),
    # map
    "map(not iterable)": Row(
        lambda app: app.map("double", 5),
        TaskArgumentsError,
        "map('double')",
        "5 (an int)",
        "app.map('double', [5])",
    ),
    "map(123, ...)": Row(
        lambda app: app.map(123, [1]), TaskArgumentsError, "app.map", "123 (an int)", "app.map('"
    ),
    "map(chunksize=0)": Row(
        lambda app: app.map("double", [1], chunksize=0),
        ArgumentValueError,
        "map('double')",
        "got 0",
        "chunksize=1",
    ),
    "map(chunksize=True)": Row(
        lambda app: app.map("double", [1], chunksize=True),
        TaskArgumentsError,
        "map('double')",
        "True (a bool)",
        "chunksize=1",
    ),
    "map(chunksize='2')": Row(
        lambda app: app.map("double", [1], chunksize="2"),
        TaskArgumentsError,
        "map('double')",
        "'2' (a str)",
        "chunksize=100",
    ),
    "map(timeout=-1)": Row(
        lambda app: app.map("double", [1], timeout=-1),
        ArgumentValueError,
        "map('double')",
        "got -1",
        "timeout=None to wait without a limit",
    ),
    "map(timeout=0)": Row(
        lambda app: app.map("double", [1], timeout=0),
        ArgumentValueError,
        "map('double')",
        "got 0",
        "timeout=5",
    ),
    "map(progress='yes')": Row(
        lambda app: app.map("double", [1], progress="yes"),
        TaskArgumentsError,
        "map('double')",
        "'yes' (a str)",
        "progress=True",
    ),
    "map(item that does not bind)": Row(
        lambda app: app.map("send", [1, 2]),
        TaskArgumentsError,
        "map('send'), item 0",
        "(1)",
        "Fix the add_task call",
    ),
    "map(chunksize>1 on a coroutine)": Row(
        lambda app: app.map("nap", [1], chunksize=2),
        TaskRegistrationError,
        "map('nap', chunksize>1)",
        "plain function",
        "use chunksize=1",
    ),
    # cancel, requeue
    "cancel('nope')": Row(
        lambda app: app.cancel("nope"), ArgumentValueError, "app.cancel", "'nope'", "task.uuid"
    ),
    "cancel(123)": Row(
        lambda app: app.cancel(123), TaskArgumentsError, "app.cancel", "123 (an int)", "task.uuid"
    ),
    "cancel(unknown uuid)": Row(
        lambda app: app.cancel(uuid_module.UUID(int=5)),
        TaskNotFound,
        "app.cancel",
        "00000000-0000-0000-0000-000000000005",
        "pass the uuid of a Task that add_task returned",
    ),
    "requeue('nope')": Row(
        lambda app: app.requeue("nope"), ArgumentValueError, "app.requeue", "'nope'", "task.uuid"
    ),
    "requeue(unknown uuid)": Row(
        lambda app: app.requeue(uuid_module.UUID(int=5)),
        TaskNotFound,
        "app.requeue",
        "00000000-0000-0000-0000-000000000005",
        "a task that ended error or cancel",
    ),
    # wait, get
    "get('nope')": Row(
        lambda app: app.get("nope"), ArgumentValueError, "app.get", "'nope'", "pass task.uuid"
    ),
    "get(123)": Row(
        lambda app: app.get(123), TaskArgumentsError, "app.get", "123 (an int)", "task.uuid"
    ),
    "wait(a Task)": Row(
        lambda app: _wait_on_a_task(app),
        TaskArgumentsError,
        "app.wait",
        "Task(",
        "app.wait(task.uuid)",
    ),
    "wait('nope')": Row(
        lambda app: app.wait("nope"), ArgumentValueError, "app.wait", "'nope'", "pass task.uuid"
    ),
    "wait(timeout=-1)": Row(
        lambda app: app.wait(uuid_module.UUID(int=1), timeout=-1),
        ArgumentValueError,
        "app.wait(00000000-0000-0000-0000-000000000001)",
        "got -1",
        "timeout=None to wait without a limit",
    ),
    "wait(timeout=nan)": Row(
        lambda app: app.wait(uuid_module.UUID(int=1), timeout=math.nan),
        ArgumentValueError,
        "app.wait(",
        "nan",
        "timeout=5",
    ),
    "wait(timeout='1')": Row(
        lambda app: app.wait(uuid_module.UUID(int=1), timeout="1"),
        TaskArgumentsError,
        "app.wait(",
        "'1' (a str)",
        "pass timeout=1",
    ),
}


async def _wait_on_a_task(app: QueueTasks) -> Any:
    """`app.wait(task)` for a task that exists; the record it adds is counted by the test."""
    from qtasks_mp.task import Task, TaskRecord

    record = TaskRecord(7, "send", "inline", 0, (1, "x"), {}, 0.0)
    return await app.wait(Task(record, app))  # type: ignore[arg-type]


@pytest.mark.parametrize("row", CALLS.values(), ids=CALLS.keys())
async def test_call_refused(app: QueueTasks, row: Row) -> None:
    app.task(name="send")(send)
    app.task(name="nap")(nap)
    app.task(name="double")(double)
    await app.start()
    counts = await app.store.counts()
    stats = app.stats()
    with pytest.raises(row.error) as info:
        await row.act(app)
    _assert_message(info.value, row)
    assert await app.store.counts() == counts  # nothing reached the store
    assert app.stats() == stats


# ---------------------------------------------------------------- the app and its parts


SETUP: dict[str, Row] = {
    "executors={'gpu': a class}": Row(
        lambda _: QueueTasks(executors={"gpu": ThreadExecutor}),  # type: ignore[dict-item]
        SetupError,
        "executors['gpu']",
        "ThreadExecutor",
        "executors={'gpu': ThreadExecutor()}",
    ),
    "executors={'gpu': 3}": Row(
        lambda _: QueueTasks(executors={"gpu": 3}),  # type: ignore[dict-item]
        SetupError,
        "executors['gpu']",
        "3 (an int)",
        "subclass qtasks_mp.Executor",
    ),
    "executors={1: ...}": Row(
        lambda _: QueueTasks(executors={1: ThreadExecutor()}),  # type: ignore[dict-item]
        SetupError,
        "executors=",
        "1 (an int)",
        "executors={'gpu': MyExecutor()}",
    ),
    "Retries(max_retries=-1)": Row(
        lambda _: Retries(max_retries=-1),
        ArgumentValueError,
        "Retries",
        "-1",
        "max_retries=0",
    ),
    "Retries(max_retries='2')": Row(
        lambda _: Retries(max_retries="2"),  # type: ignore[arg-type]
        SetupError,
        "Retries",
        "'2' (a str)",
        "max_retries=3",
    ),
    "Retries(backoff_s=nan)": Row(
        lambda _: Retries(backoff_s=math.nan), ArgumentValueError, "Retries", "nan", "backoff_s="
    ),
    "Retries(retry_on=(KeyboardInterrupt,))": Row(
        lambda _: Retries(retry_on=(KeyboardInterrupt,)),
        SetupError,
        "Retries",
        "KeyboardInterrupt",
        "drop it from retry_on",
    ),
    "CallLogging(level='INFO')": Row(
        lambda _: CallLogging(level="INFO"),  # type: ignore[arg-type]
        SetupError,
        "CallLogging",
        "'INFO' (a str)",
        "level=logging.INFO",
    ),
}


@pytest.mark.parametrize("row", SETUP.values(), ids=SETUP.keys())
def test_setup_refused(row: Row) -> None:
    with pytest.raises(row.error) as info:
        row.act(None)  # type: ignore[arg-type]
    _assert_message(info.value, row)


def app_arguments(**given: Any) -> Callable[[Any], None]:
    """`QueueTasks(...)` with these arguments (the rest default; the name is 'app')."""
    args = {"name": "app"}
    args.update(given)
    name = args.pop("name")
    return lambda _: QueueTasks(name, **args)  # type: ignore[arg-type]


APP_ARGUMENTS: dict[str, Row] = {
    "name=123": Row(
        app_arguments(name=123), SetupError, "QueueTasks(name=", "123 (an int)", "name='123'"
    ),
    "name=''": Row(
        app_arguments(name=""), ArgumentValueError, "QueueTasks(name=", "''", "name='my_app'"
    ),
    "store=5": Row(
        app_arguments(store=5), SetupError, "app 'app'", "5 (an int)", "store='tasks.db'"
    ),
    "store=a Store class": Row(
        app_arguments(store=MemoryStore),
        SetupError,
        "app 'app'",
        "MemoryStore",
        "store=MemoryStore(...)",
    ),
    "config={...}": Row(
        app_arguments(config={"thread_workers": 2}),
        SetupError,
        "app 'app'",
        "{'thread_workers': 2} (a dict)",
        "config=QueueConfig(**...)",
    ),
    "middlewares=[Timing]": Row(
        app_arguments(middlewares=[Timing]), SetupError, "app 'app'", "Timing", "pass Timing()"
    ),
    "middlewares=Timing()": Row(
        app_arguments(middlewares=Timing()),
        SetupError,
        "app 'app'",
        "Timing",
        "middlewares=[Timing()]",
    ),
    "executors=[...]": Row(
        app_arguments(executors=[ThreadExecutor()]),
        SetupError,
        "app 'app'",
        "(a list)",
        "executors={'gpu': MyExecutor()}",
    ),
}


@pytest.mark.parametrize("row", APP_ARGUMENTS.values(), ids=APP_ARGUMENTS.keys())
def test_app_arguments_refused(row: Row) -> None:
    with pytest.raises(row.error) as info:
        row.act(None)
    _assert_message(info.value, row)


def test_app_arguments_accept_the_ordinary_ones(tmp_path: Any) -> None:
    for store in (None, "tasks.db", tmp_path / "t.db", MemoryStore()):
        checks_module.app_arguments(
            "shop",
            store,
            QueueConfig(),
            [Timing(), Retries(max_retries=1)],
            {"io": ThreadExecutor()},
            config_type=QueueConfig,
            store_type=Store,
            middleware_type=Middleware,
            executor_type=Executor,
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shutdown_timeout", math.nan, "got nan"),
        ("default_task_priority", 2**63, "64 bits"),
        ("thread_workers", True, "type int"),
    ],
)
def test_config_refuses(field: str, value: Any, message: str) -> None:
    config = QueueConfig()
    before = getattr(config, field)
    with pytest.raises(ConfigError, match=message) as info:
        setattr(config, field, value)
    assert repr(field) in str(info.value)
    assert getattr(config, field) == before


# ---------------------------------------------------------------- the error tree


def test_refusals_are_the_builtins_a_caller_catches() -> None:
    assert issubclass(TaskRegistrationError, TypeError)
    assert issubclass(TaskArgumentsError, TypeError)
    assert issubclass(SetupError, TypeError)
    assert issubclass(ArgumentValueError, ValueError)
    assert issubclass(TaskNotFound, KeyError)
    for error in (TaskRegistrationError, TaskArgumentsError, SetupError, ArgumentValueError):
        assert issubclass(error, QTasksError)


def test_long_values_are_shortened_in_messages() -> None:
    app = QueueTasks("test")
    with pytest.raises(TaskRegistrationError) as info:
        app.task(name="send", tags="x" * 10_000)(send)
    assert len(str(info.value)) < 400


def test_every_table_row_has_a_distinct_id() -> None:
    ids = [*REGISTRATION, *CALLS, *SETUP, *APP_ARGUMENTS]
    assert len(ids) == len(set(ids))


def test_logging_module_levels_are_accepted() -> None:
    assert CallLogging(level=logging.INFO).level == logging.INFO
