"""The `Executor` interface and `Call`, the unit of work an executor runs.

An executor runs one attempt of one task: `await executor.run(call)` returns the
task's result or raises its exception. It owns its own state: how many calls it has
taken (`claim()` / `release()`, read as `active`), its workers and connections, and
who to tell when its room grows (`attach()`; the executor calls `wakeup()`). The
dispatcher takes from the store only as many tasks as `capacity` says, claims a slot
for each call while it runs, and never writes an executor's attributes.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..registries import AsyncTask, Kind, TaskSpec
from ..task import TaskRecord


class Call:
    """One attempt of one task, as handed to the middleware chain and the executor."""

    __slots__ = ("args", "context", "kwargs", "record", "spec")

    def __init__(self, spec: TaskSpec, record: TaskRecord, context: AsyncTask | None) -> None:
        self.spec = spec
        self.record = record
        self.context = context
        self.args: tuple[Any, ...] = (context, *record.args) if context else record.args
        self.kwargs: dict[str, Any] = record.kwargs

    @property
    def task_name(self) -> str:
        return self.spec.name

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, …"""
        return self.record.retry + 1

    @property
    def timeout(self) -> float | None:
        return self.spec.timeout

    async def handle_item(self, item: Any) -> Any:
        """Pass one yielded item to the `generate_handler`, in the dispatcher's loop."""
        handler = self.spec.generate_handler
        if handler is None:
            return item
        out = handler(item)
        if inspect.isawaitable(out):
            out = await out
        return out

    def __repr__(self) -> str:
        return f"<Call {self.task_name!r} {self.record.uuid} attempt={self.attempt}>"


async def run_in_loop(call: Call) -> Any:
    """Run a call of any kind in the current event loop (the inline way)."""
    fn, args, kwargs = call.spec.fn, call.args, call.kwargs
    kind = call.spec.kind
    if kind is Kind.COROUTINE:
        return await fn(*args, **kwargs)
    if kind is Kind.ASYNC_GEN:
        return [await call.handle_item(item) async for item in fn(*args, **kwargs)]
    if kind is Kind.GENERATOR:
        return [await call.handle_item(item) for item in fn(*args, **kwargs)]
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):  # a plain function that returned a coroutine: finish it
        result = await result
    return result


def run_in_thread(call: Call, loop: asyncio.AbstractEventLoop) -> Any:
    """Run a plain function or generator in a worker thread.

    Generator items go back to `loop` one at a time for the `generate_handler`, so an
    async handler works and every handler runs where the dispatcher is.
    """
    fn, args, kwargs = call.spec.fn, call.args, call.kwargs
    if call.spec.kind is not Kind.GENERATOR:
        result = fn(*args, **kwargs)
        if inspect.iscoroutine(result):
            result.close()
            raise TypeError(
                f"task {call.task_name!r} returned a coroutine from a worker thread; declare "
                "it `async def` (or give it executor='inline') so it is awaited"
            )
        return result
    if call.spec.generate_handler is None:
        return list(fn(*args, **kwargs))
    submit = asyncio.run_coroutine_threadsafe
    return [submit(call.handle_item(item), loop).result() for item in fn(*args, **kwargs)]


async def within(fut: asyncio.Future[Any], timeout: float) -> bool:
    """Wait until `fut` is done or `timeout` seconds pass; whether it is done.

    Unlike `asyncio.wait_for` (built on `asyncio.timeout()` since Python 3.12), it never
    cancels the task that waits, nor `fut`: safe in an `eager` executor's `run`.
    """
    if fut.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, wake)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)
    return fut.done()


class Executor(ABC):
    """Runs calls. Subclasses implement `run`; most also set `slots`.

    `name` is the lane the dispatcher keeps for it (and the key in `app.executors`).
    `kinds` lists the task kinds it can run; registering another kind is an error.
    """

    name: str = "custom"
    kinds: frozenset[Kind] = frozenset(Kind)
    #: Whether `run` can hand the task context (`echo=True`) to the code; `@app.task`
    #: refuses echo=True on an executor that cannot.
    supports_context: bool = True
    #: Whether a caller waiting for a call may run `run` in its own asyncio task (see
    #: `qtasks_mp/eager.py`): only if `run` never counts on being its own task (no
    #: `asyncio.timeout()`, TaskGroup or `current_task()`) and runs no user coroutine in
    #: the loop. Off unless an executor says so; the thread and process ones do.
    eager: bool = False

    def __init__(self) -> None:
        self._active = 0  # calls claimed (by the dispatcher, or by a wrapping executor)
        self._on_room: Callable[[], None] | None = None
        self.shared_store = False  # see `attach`

    @property
    def active(self) -> int:
        """Calls claimed and not yet released: running, or in the middleware around `run`."""
        return self._active

    def claim(self) -> None:
        """Count one more call as ours until `release()`; `capacity` shrinks by one."""
        self._active += 1

    def release(self) -> None:
        """The call claimed with `claim()` ended (however it ended)."""
        self._active -= 1

    def lend(self) -> bool:
        """A running call waits for another task (lending.py): may the executor run one
        call more than it has slots until `give_back()`? Yes only where the waiting call
        holds nothing another call needs (a coroutine; a blocked thread, when another
        can be started): then `slots` grows by one meanwhile (the call still counts as
        `active`), and `wakeup()`. The default: False (the call keeps its slot)."""
        return False

    def give_back(self) -> None:
        """A wait `lend()` said True for ended: `slots` as before."""

    def attach(
        self, name: str, on_room: Callable[[], None] | None, *, shared_store: bool = False
    ) -> None:
        """Called by the app before `start()`: the lane name it is known by, and the
        callback `wakeup()` calls (None to detach, after `aclose()`). `shared_store`:
        the tasks of its calls are leased from a store other processes take from too
        (SQLite, PostgreSQL), so `slots` should not hold many more than it can start
        soon: a task leased here is one another machine's idle worker cannot take."""
        self.name = name
        self._on_room = on_room
        self.shared_store = shared_store

    def wakeup(self) -> None:
        """Say that `capacity` grew for a reason of the executor's own (a worker
        started, a thread came back, a rate-limit token arrived): the dispatcher looks."""
        if self._on_room is not None:
            self._on_room()

    @property
    def slots(self) -> int:
        """How many calls may run at once."""
        return 1

    @property
    def capacity(self) -> int:
        """How many more calls it can take right now."""
        return self.slots - self._active

    async def start(self) -> None:
        """Acquire resources (threads, processes, connections). Called once per app start."""

    @abstractmethod
    async def run(self, call: Call) -> Any:
        """Run one attempt; return its result or raise its exception.

        Honour `call.timeout` by raising `TaskTimeout`, and say in it what happened to
        the code that was running.
        """

    def cancel(self, call: Call) -> bool:
        """Stop `call`, which `run` is running now (`app.cancel()`): True if `run` will
        now end soon, raising whatever it raises (the task ends `cancel` anyway).

        The default cannot: False. The dispatcher then cancels the asyncio task awaiting
        `run` (as at stop: `run` gets `CancelledError`), except for a call a waiting
        caller drives (`eager`), whose outcome is discarded when `run` returns.
        """
        return False

    def ended(self, call: Call) -> bool:
        """Whether `call`'s outcome is decided already though `run` has not returned it
        yet (the process executor's direct calls): a cancel asked now is too late."""
        return False

    async def aclose(self, cancel_pending: bool = False) -> None:
        """Release resources. The dispatcher has already waited for running calls."""

    def size_label(self) -> str:
        """Its size as the app's start line says it (`inline(10)`): `slots` by default."""
        return str(self.slots)

    def stats(self) -> dict[str, Any]:
        return {"slots": self.slots, "active": self.active}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.active}/{self.slots}>"


class BaseTaskExecutor:
    """QTasks' executor base (`qtasks.executors.base`), so that QTasks code imports.

    QTasks runs a task through an instance of such a class (`executor=MyTaskExecutor`);
    here `executor=` takes an `Executor` (or its name), which runs calls, and
    `@app.task` refuses a class with that fix. See docs/qtasks.md ("Executors").
    """

    def __init__(self, task_func: Any, task_broker: Any, log: Any = None) -> None:
        self.task_func = task_func
        self.task_broker = task_broker
        self.log = log
