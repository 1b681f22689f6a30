"""The app core: registry, `add_task`, waiting, lifecycle. Async; the sync facade wraps it.

`qtasks_mp.asyncio.QueueTasks` is this class; `qtasks_mp.QueueTasks` runs it in a
background event loop for plain programs. There is one implementation of every
behaviour, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from asyncio import _get_running_loop
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

from . import checks
from .checks import INF, INT64_MAX, INT64_MIN, SECONDS_TYPES
from .config import QueueConfig
from .dispatcher import Dispatcher, Taken
from .errors import (
    AppNotRunning,
    ArgumentValueError,
    SetupError,
    TaskArgumentsError,
    TaskFailed,
    TaskNotFound,
)
from .events import Events
from .executors.base import Executor
from .handoff import call_in_loop
from .home import HOME, PRIVATE, SHARED, Home, defining_file
from .lifecycle import RunState, run_forever_deferred, stop_signals, wait_for_stop_signal
from .middleware.base import Middleware
from .middleware.call_logging import CallLogging
from .middleware.retries import Retries
from .middleware.timing import Timing
from .progress import ProgressCallback, ProgressLine
from .registration import TaskDecorator, TaskRegistry
from .registries import Kind, TaskSpec
from .routers import Router
from .runtime import Runtime
from .stores import store_from
from .stores.base import Cancelled, Store
from .stores.memory import MemoryStore
from .task import FINISHED, Task, TaskRecord, TaskStatus, new_key
from .unique import call_key

__all__ = ["AppCore", "wait_for_stop_signal"]

log = logging.getLogger("qtasks_mp")


T = TypeVar("T")


class AppCore:
    """An app: tasks, a store, executors and one dispatcher.

    `store` defaults to a `MemoryStore`. `middlewares` run inside the built-in
    `CallLogging`, `Timing` and `Retries`, except that one of those types replaces
    the built-in (`Retries(max_retries=2)` sets app-wide retry defaults). `executors`
    add to or replace the built-in `"inline"` and `"thread"` ones, by name.
    """

    def __init__(
        self,
        name: str = "QueueTasks",
        *,
        store: Store | str | os.PathLike[str] | None = None,
        config: QueueConfig | None = None,
        middlewares: Sequence[Middleware] | None = None,
        executors: Mapping[str, Executor] | None = None,
        dashboard: int | Mapping[str, Any] | None = None,
    ) -> None:
        checks.app_arguments(
            name,
            store,
            config,
            middlewares,
            executors,
            config_type=QueueConfig,
            store_type=Store,
            middleware_type=Middleware,
            executor_type=Executor,
        )
        self.name = name
        self.config = config or QueueConfig()
        store_ = store_from(store)
        timing_: Timing = Timing()
        if dashboard is not None:  # its pages and /metrics show run/wait histograms
            from .metrics import TaskMetrics

            timing_ = TaskMetrics()
        builtin: list[Middleware] = [CallLogging(), timing_, Retries()]
        extra: list[Middleware] = []
        for mw in middlewares or ():
            same = [i for i, b in enumerate(builtin) if isinstance(mw, type(b))]
            if same:  # e.g. Retries(max_retries=2): replaces the default, same place
                builtin[same[0]] = mw
            else:
                extra.append(mw)
        self.middlewares: list[Middleware] = [*builtin, *extra]
        # Middlewares that write into a new task's record as add_task builds it (trace
        # context): usually none, and then add_task pays one empty-tuple test.
        self._on_add = tuple(
            mw.on_add for mw in self.middlewares if type(mw).on_add is not Middleware.on_add
        )
        timing = builtin[1]
        assert isinstance(timing, Timing)
        self.timing = timing
        # The tasks and executors (registration.py) ...
        self._registry = registry = TaskRegistry(self.config, self.middlewares, executors)
        self.specs = registry.specs
        self.executors = registry.executors
        #: QTasks' `app.events.on.<event>()` handlers (events.py)
        self.events = Events(lambda: registry.facade)
        # ... and all that lives only while the app runs (runtime.py).
        self._runtime = Runtime(
            name,
            store_,
            self.config,
            registry.executors,
            registry.specs,
            self,
            lambda spec: registry.route(spec, self.events.middleware()),
            registry.size_executor,
            self.events,
        )
        registry.on_registered(self._runtime.registered)
        registry.facade = self  # the sync facade puts itself here (`my_task.add_task`)
        #: the dashboard's server (`QueueTasks(dashboard=8000)`): `app.dashboard.url`
        self.dashboard = None if dashboard is None else _dashboard(self, name, dashboard)
        if self.dashboard is not None:
            self._runtime.add_service(self.dashboard)
        self._warned_stopped = False  # said once that tasks wait for start()
        # QTasks' worker and client processes meet at the app's home (home.py)
        self._home = Home.of(name, defining_file())
        self._default_store = store is None
        self._home_lock = threading.Lock()

    # ---------------------------------------------------------------- registration

    @property
    def task(self) -> TaskDecorator:
        """Register a task: `@app.task`, `@app.task("name")` or `@app.task(name=..., ...)`.

        Every option is checked here: a bad one raises `TaskRegistrationError` naming the
        task, the value and the fix, and nothing is registered (see registration.py).
        """
        return self._registry.task

    def include_router(self, router: Router) -> None:
        """Register the tasks of a QTasks router (`qtasks_mp.routers`) on this app."""
        router.include_into(self)

    async def add_executor(self, name: str, executor: Executor) -> None:
        """Add an executor under `name`; on a running app, start it now.

        Raises what its `start()` raised (as `AppNotRunning`), with nothing left running.
        """
        self._registry.add_executor(executor, name)
        await self._runtime.lane_ready(name)

    # ---------------------------------------------------------------- adding and reading

    def add_task(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Task | None]:
        """Queue a task and return its `Task` (status "new") at once. Await the result.

        Arguments are bound to the function's signature first: a mismatch raises
        `TaskArgumentsError`, an unknown name `TaskNotFound`, before anything is
        accepted. `args=(...)` and `kwargs={...}` are accepted too. With `timeout=`
        it waits for the end and returns the finished `Task`, or None when the time ran out.
        Bad input (`checks.py`) raises before anything is accepted.

        `unique_key="order-42"` (or a task registered with `unique=True`): while a task
        of this name and key is new or process, nothing is added and that task is
        returned (with `timeout=`, its outcome, waited for).

        Called in the app's running loop with a store that puts at once (memory), the
        task is accepted by this call already, and what it returns for a wait is the
        waiter itself (a future, also usable as a coroutine): a gather of 50,000 waited
        calls then costs no `asyncio.Task` or coroutine each (waiters.py). Elsewhere,
        and whenever the fast way does not apply, it is a coroutine that does it all
        when awaited; errors are raised by the `await` either way.
        """
        runtime = self._runtime
        if (
            runtime.state is RunState.RUNNING
            and unique_key is None
            and (timeout is None or (type(timeout) in SECONDS_TYPES and 0 < timeout < INF))
            and _get_running_loop() is runtime.loop
            and "args" not in kwargs
            and "kwargs" not in kwargs
        ):
            try:
                record = self._new_record(task_name, args, kwargs, priority)
            except Exception:  # raised by the coroutine's `await`, below
                pass
            else:
                return self._accept_now(record, timeout)
        return self._add_task(task_name, args, priority, timeout, unique_key, kwargs)

    def add_task_awaited(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Task | None]:
        """`add_task` as a coroutine that does nothing until awaited, wherever it is
        called: for a blocking caller that hands it to the app's loop and may refuse it
        first (the sync facade, a plain function's `self.add_task`), so nothing is
        accepted when it raises."""
        return self._add_task(task_name, args, priority, timeout, unique_key, kwargs)

    def _accept_now(
        self, record: TaskRecord, timeout: float | None
    ) -> Coroutine[Any, Any, Task | None]:
        """`add_task` in the app's running loop, its record built: accept it now; a
        waiter for it, or a coroutine when the rest may suspend."""
        runtime = self._runtime
        dispatcher = runtime.dispatcher
        waiters = runtime.waiters
        if (
            record.unique_key is not None
            or dispatcher is None
            or waiters is None
            or record.lane not in dispatcher.lanes
            or not runtime.store.put_now(record)
        ):
            return self._accept(record, timeout)
        waiters.accepted()
        if timeout is None:
            dispatcher.offer(record.lane)
            return _answer(record.snapshot(self))
        if dispatcher.may_run_waited(record):
            # The caller may run it itself (eager.py), if its lane is idle when the
            # caller's task gets to it: decided then, not now (a gather makes all its
            # calls before the first one runs).
            return self._wait(record, timeout)
        dispatcher.offer(record.lane)
        return waiters.wait(record.key, timeout)

    async def _add_task(
        self,
        task_name: str,
        args: tuple[Any, ...],
        priority: int | None,
        timeout: float | None,
        unique_key: str | None,
        kwargs: dict[str, Any],
    ) -> Task | None:
        if timeout is not None and not (type(timeout) in SECONDS_TYPES and 0 < timeout < INF):
            timeout = checks.wait_seconds(
                f"task {task_name!r}", timeout, zero_ok=False, none_means="return at once"
            )
        record = self._new_record(task_name, args, kwargs, priority)
        if unique_key is not None:
            record.unique_key = (
                unique_key if type(unique_key) is str else checks.unique_key(task_name, unique_key)
            )
        return await self._accept(record, timeout)

    async def _accept(self, record: TaskRecord, timeout: float | None) -> Task | None:
        """The rest of `add_task` for a record built: start or join the app, put the
        record in the store, and wait for it if asked to."""
        task_name = record.task_name
        runtime = self._runtime
        if runtime.state is not RunState.RUNNING:
            await self._not_running(task_name, timeout)
        elif asyncio.get_running_loop() is not runtime.loop:
            runtime.check_loop(f"task {task_name!r}")  # raises
        dispatcher = runtime.dispatcher
        if dispatcher is not None and record.lane not in dispatcher.lanes:
            await runtime.lane_ready(record.lane)  # raises if it cannot start
        waiters = runtime.waiters
        assert waiters is not None
        if record.unique_key is None:
            await self.store.put(record)
        else:
            holder = await self.store.put_unique(record)
            if holder is not None:  # a task of this name and key is new or process
                if timeout is None:
                    return holder.snapshot(self)
                return await self.wait(holder.uuid, timeout)
        waiters.accepted()
        if timeout is None:
            if dispatcher is not None:
                dispatcher.offer(record.lane)
            return record.snapshot(self)
        if dispatcher is None:
            return await waiters.wait(record.key, timeout)
        return await self._wait(record, timeout)

    async def _wait(self, record: TaskRecord, timeout: float) -> Task | None:
        """Wait for a task just accepted; on an idle lane, the caller runs the call
        itself (eager.py)."""
        dispatcher = self._runtime.dispatcher
        waiters = self._runtime.waiters
        assert dispatcher is not None and waiters is not None
        running = dispatcher.run_waited(record, timeout)
        if running is not None:
            return await self._wait_running(record, running, timeout)
        return await waiters.wait(record.key, timeout)

    async def _wait_running(
        self,
        record: TaskRecord,
        running: Coroutine[Any, Any, TaskRecord | None],
        timeout: float,
    ) -> Task | None:
        """Run the call in the caller's task (eager.py); if it did not end there, wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ran = await running
        if ran is not None and ran.status in FINISHED:
            return ran.snapshot(self)
        waiters = self._runtime.waiters
        assert waiters is not None
        return await waiters.wait(record.key, max(0.0, deadline - loop.time()))

    async def _not_running(self, task_name: str, timeout: float | None) -> None:
        """`add_task` on an app that is not running. A start under way is joined. A
        task added to a stopped app waits in the store until `start()` (said once in
        the log), except that a caller cannot wait for it: with a store of this process
        only, nothing could run it meanwhile, so that raises instead of timing out."""
        if self.state is RunState.STARTING:
            await self.start()
            return
        self.join_worker()
        await self._runtime.open_store()
        if self.store.shared:
            return  # other processes may run it
        if timeout is not None:
            raise AppNotRunning(
                f"task {task_name!r} not accepted: app {self.name!r} is {self.state}, so "
                f"add_task(..., timeout={timeout!r}) could only time out, and no worker "
                f"runs it (`app.run_forever()` in another process). {_START_FIRST}"
            )
        if not self._warned_stopped:
            self._warned_stopped = True
            log.warning(
                "task %r queued while app %r is %s: it runs when the app starts. %s",
                task_name,
                self.name,
                self.state,
                _START_FIRST,
            )

    async def map(
        self,
        task_name: str,
        iterable: Iterable[Any],
        *,
        chunksize: int = 1,
        timeout: float | None = None,
        progress: bool | ProgressCallback = False,
    ) -> list[Any]:
        """`[task_name(item) for item in iterable]`, run as tasks; the results, in order.

        With `chunksize=1` every item is a task of its own. With `chunksize=N` (plain
        functions only), N items make one task of the companion task `"<name>.map"`,
        which calls the function on each: tiny calls then cost one task per chunk, and
        a chunk's items share its retries and timeout. Every item is checked against
        the signature before anything is accepted. Raises `TaskFailed` for the first
        failed item or chunk (its traceback as `__cause__`'s text), `TimeoutError` if
        `timeout` runs out first (the tasks go on).

        `progress=True` shows a progress line on stderr (`progress.py`); a
        `callable(done, total)` is called instead, in the app's loop, as items finish.
        """
        if type(task_name) is not str:
            task_name = checks.call_task_name(task_name, "app.map")
        spec = self.specs.get(task_name)
        if spec is None:
            raise TaskNotFound(self._registry.unknown_task(task_name))
        chunksize = checks.chunksize(task_name, chunksize)
        if timeout is not None:
            timeout = checks.wait_seconds(
                f"map({task_name!r})", timeout, zero_ok=False, none_means="wait without a limit"
            )
        checks.progress(task_name, progress)
        checks.iterable(task_name, iterable)
        items = list(iterable)
        for i, item in enumerate(items):
            try:
                spec.bind((item,), {})
            except TaskArgumentsError as e:
                raise TaskArgumentsError(
                    f"map({task_name!r}), item {i} ({item!r:.60}): {e}"
                ) from None
        if chunksize == 1:
            batches: list[Any] = items
        else:
            spec = self._registry.chunk_spec(spec)
            batches = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
        tasks = [await self.add_task(spec.name, batch) for batch in batches]
        deadline = None if timeout is None else time.monotonic() + timeout
        report: ProgressCallback | None = None
        if progress is True:
            report = ProgressLine(f"map {task_name!r}")
        elif callable(progress):
            report = progress
        if report is not None:
            report(0, len(items))
        results: list[Any] = []
        for task in tasks:
            assert task is not None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = await self.wait(task.uuid, left)
            if done is None:
                raise TimeoutError(f"map({task_name!r}) did not finish within {timeout}s")
            if done.status != "success":
                raise TaskFailed(done.task_name, done.traceback)
            if chunksize == 1:
                results.append(done.returning)
            else:
                results.extend(done.returning)
            if report is not None:
                report(len(results), len(items))
        return results

    def _new_record(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], priority: int | None
    ) -> TaskRecord:
        # The common case costs two type() identity checks; anything else goes to checks.py.
        spec = self.specs.get(task_name) if type(task_name) is str else None
        if spec is None:
            task_name = checks.call_task_name(task_name, "add_task")
            spec = self.specs.get(task_name)
            if spec is None:
                raise TaskNotFound(self._registry.unknown_task(task_name))
        if self._runtime.state is RunState.STOPPING:  # (`_stopping`, one call less)
            raise AppNotRunning(f"task {task_name!r} not accepted: the app is stopping")
        if priority is None:
            priority = (
                spec.priority if spec.priority is not None else (self.config.default_task_priority)
            )
        elif type(priority) is not int or not INT64_MIN <= priority <= INT64_MAX:
            priority = checks.call_priority(task_name, priority)
        if "args" in kwargs:
            extra = checks.call_args(task_name, kwargs.pop("args"))
            if args:
                raise TaskArgumentsError(
                    f"task {task_name!r}: give arguments positionally or as args=(...), not "
                    f"both (got {args!r:.60} and args={extra!r:.60}); pass them one way"
                )
            args = extra
        if "kwargs" in kwargs:
            extra_kw = checks.call_kwargs(task_name, kwargs.pop("kwargs"))
            clash = set(extra_kw) & set(kwargs)
            if clash:
                raise TaskArgumentsError(
                    f"task {task_name!r}: {sorted(clash)} given twice, directly and in "
                    "kwargs=; pass each once"
                )
            kwargs.update(extra_kw)
        spec.bind(args, kwargs)
        assert isinstance(spec.executor, str)
        record = TaskRecord(
            new_key(), task_name, spec.executor, priority, args, kwargs, time.time()
        )
        if spec.unique:
            record.unique_key = call_key(task_name, spec.signature, args, kwargs)
        for on_add in self._on_add:
            on_add(record)
        return record

    def check_call(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Raise now what `add_task(task_name, *args, ...)` would raise for these
        arguments (unknown task, arguments that do not fit); accept nothing."""
        self._new_record(task_name, args, dict(kwargs), priority)
        if unique_key is not None and type(unique_key) is not str:
            checks.unique_key(task_name, unique_key)

    async def get(self, uuid: UUID | str) -> Task | None:
        """The task as it is now, or None if unknown (or dropped by retention)."""
        if type(uuid) is not UUID:
            uuid = checks.task_id(uuid, "app.get")
        await self._runtime.open_store()
        record = await self.store.get(uuid)
        if record is None and await self._record_direct_calls():
            record = await self.store.get(uuid)
        return None if record is None else record.snapshot(self)

    async def _record_direct_calls(self) -> bool:
        """(In the loop.) `post_direct_calls`, and let the loop run what it posted: a
        task a direct call made, asked for by its uuid from the loop right after, is in
        the store then. True if anything was left."""
        if not self.post_direct_calls():
            return False
        await asyncio.sleep(0)  # the flushes, queued first, run before we resume
        return True

    def post_direct_calls(self) -> bool:
        """(Any thread.) Have the loop record soon what sync callers' direct calls left
        it (it does within 2 ms anyway: executors/process/parked.py); what is queued in
        the loop after this runs after it. True if anything was left."""
        from .executors.process.direct import DirectCalls  # (loaded with a pool anyway)

        left = False
        for executor in self.executors.values():
            direct = getattr(executor, "direct", None)
            if isinstance(direct, DirectCalls) and direct.steps:
                direct.flush_soon()
                left = True
        return left

    async def wait(self, uuid: UUID | str, timeout: float | None = None) -> Task | None:
        """Wait, without polling, for a task to end; the finished `Task`, or None on timeout."""
        if type(uuid) is not UUID:
            uuid = checks.task_id(uuid, "app.wait")
        if timeout is not None and not (type(timeout) in SECONDS_TYPES and 0 <= timeout < INF):
            timeout = checks.wait_seconds(
                f"app.wait({uuid})", timeout, zero_ok=True, none_means="wait without a limit"
            )
        await self._runtime.open_store()
        record = await self.store.get(uuid)
        if record is None and await self._record_direct_calls():
            record = await self.store.get(uuid)
        if record is None:
            raise TaskNotFound(f"no task {uuid} (never added, or dropped by result retention)")
        if record.status in FINISHED:
            return record.snapshot(self)
        if self.state is RunState.STOPPED and not self.store.shared:
            raise AppNotRunning(
                f"task {record.task_name!r} ({uuid}) is {record.status}, and app {self.name!r} "
                f"is stopped: nothing can run it while you wait. {_START_FIRST}"
            )
        return await self._runtime.bind_loop().wait(uuid.int, timeout)

    async def cancel(self, task: UUID | str | Task) -> bool:
        """Cancel a task: True if it was queued or running and has now ended `cancel`;
        False if it had already ended (or ended on its own while the cancel was on its
        way: exactly one final status). An unknown id raises `TaskNotFound`.

        A queued task never starts. A running one is stopped by its executor: a process
        worker is killed and replaced; an inline coroutine gets `CancelledError`; a
        thread cannot be stopped, so the task ends at once, its context's `cancelled`
        becomes True and its result is discarded; a Dask future is cancelled (see
        docs/cancel.md). Its waiters get the `Task` with status `cancel`; it is never
        retried. With a shared store, a task running in another process is cancelled
        there (that process sees the request within a second), and this waits for it.
        """
        if type(task) is not UUID:
            task = checks.task_ref(task, "app.cancel")
        runtime = self._runtime
        await runtime.open_store()
        waiters = runtime.bind_loop()
        dispatcher = runtime.dispatcher
        if dispatcher is not None and dispatcher.cancel(task):  # running (or taken) here
            done = await waiters.wait(task.int, None)
            return done is not None and done.status == TaskStatus.CANCEL
        outcome = await self.store.cancel(task, time.time())
        if outcome is None:
            raise TaskNotFound(
                f"app.cancel: no task {task} (never added, or dropped by result retention); "
                "pass the uuid of a Task that add_task returned"
            )
        how, record = outcome
        if how is Cancelled.ALREADY_ENDED:
            return False
        if how is Cancelled.ENDED_NOW:  # it was queued: it never starts
            waiters.finished(record)
            return True
        # Running: here (taken just now) or in another process, which ends it when it
        # sees the request (its store reports it within a second).
        dispatcher = runtime.dispatcher
        if dispatcher is not None and dispatcher.cancel(task):
            done = await waiters.wait(task.int, None)
        else:
            done = await self.wait(task, _CANCEL_WAIT_S)
        if done is None:
            raise TimeoutError(
                f"app.cancel: task {record.task_name!r} ({task}) runs in another process, "
                f"which did not end it within {_CANCEL_WAIT_S:g}s of the request (an older "
                "qtasks_mp, or a stalled process?); it ends `cancel` when that process sees "
                "the request, or when its lease is reclaimed"
            )
        return done.status == TaskStatus.CANCEL

    async def requeue(self, task: UUID | str | Task) -> Task:
        """Queue a task that ended `error` or `cancel` again, under the same uuid: its
        attempts start over, its result and traceback are cleared, and the run that
        ended is appended to `Task.history` (status, attempts, end time, traceback).
        Returns the `Task` (status `new`). Raises `TaskNotFound` for an unknown id and
        `ArgumentValueError` for a task that is not `error` or `cancel`.
        """
        if type(task) is not UUID:
            task = checks.task_ref(task, "app.requeue")
        runtime = self._runtime
        await runtime.open_store()
        outcome = await self.store.requeue(task, time.time())
        if outcome is None:
            raise TaskNotFound(
                f"app.requeue: no task {task} (never added, or dropped by result "
                "retention); pass the uuid of a task that ended error or cancel"
            )
        requeued, record = outcome
        if not requeued:
            raise ArgumentValueError(
                f"app.requeue: task {record.task_name!r} ({task}) is {record.status}; only "
                "a task that ended error or cancel can be requeued (add a new one instead)"
            )
        runtime.bind_loop().accepted()
        dispatcher = runtime.dispatcher
        if dispatcher is not None and record.task_name in self.specs:
            await runtime.lane_ready(record.lane)
            dispatcher.offer(record.lane)
        return record.snapshot(self)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every task added here has ended (retries included). False on timeout."""
        return await self._runtime.bind_loop().wait_idle(timeout)

    def metrics(self) -> bytes:
        """The app's metrics in Prometheus' text format (extra `web`; see docs/metrics.md).

        Call it in the app's loop (or use `metrics_async` from `qtasks_mp.metrics`).
        With `TaskMetrics` in `middlewares=` (or a dashboard) it has run/wait histograms.
        """
        from .metrics import metrics

        return metrics(self)

    async def serve_dashboard(
        self, port: int = 8000, host: str = "127.0.0.1", token: str | None = None
    ) -> None:
        """Serve the dashboard in this loop until cancelled (extra `web`; docs/dashboard.md).
        Binding anything but a loopback address needs a `token`."""
        from .web import serve_dashboard

        await serve_dashboard(self, port=port, host=host, token=token)

    def stats(self) -> dict[str, Any]:
        """What the app is doing: tasks not yet ended, executors, and per-task timings."""
        active = self._runtime.active
        waiters = self._runtime.waiters
        unfinished = waiters.unfinished if waiters is not None else 0
        return {
            "app": self.name,
            "state": str(self.state),
            "running": self.running,
            "unfinished": unfinished,
            "active": active,
            "queued": max(0, unfinished - active),
            "executors": {name: e.stats() for name, e in self.executors.items()},
            "tasks": self.timing.summary(),
            # running tasks that reported progress: uuid -> task, done, total, note
            "progress": self._runtime.progress.running(),
        }

    # ---------------------------------------------------------------- lifecycle

    @property
    def state(self) -> RunState:
        """stopped, starting, running or stopping (see `qtasks_mp/runtime.py`)."""
        return self._runtime.state

    @property
    def running(self) -> bool:
        return self._runtime.state is RunState.RUNNING

    @property
    def _stopping(self) -> bool:
        return self._runtime.state is RunState.STOPPING

    @property
    def store(self) -> Store:
        """Where tasks wait and results are kept."""
        return self._runtime.store

    @store.setter
    def store(self, store: Store) -> None:
        """Use another store (e.g. `qtasks-mp run --store`); only before it is opened."""
        self._runtime.use_store(store)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the app is bound to (set by its first start or call)."""
        return self._runtime.loop

    async def start(self) -> None:
        """Open the store, start the executors and the dispatcher.

        A start while running does nothing; while starting, it joins that start and
        raises what it raised. A start that fails closes what it had started (executors,
        worker processes, the store) and raises.
        """
        _setup_logging(self.config.logs_default_level)
        await self._runtime.start()

    async def stop(self) -> None:
        """Stop: running tasks get `config.shutdown_timeout` seconds, then are cancelled.

        With a memory store, tasks still queued are dropped (status "cancel") and the
        log says how many. Every executor started is closed, whatever failed before.
        """
        await self._runtime.stop()

    def hurry_stop(self) -> None:
        """Cut the stop under way (or about to start) short, as a second Ctrl-C does:
        the running tasks are cancelled now, as when `shutdown_timeout` runs out. From
        any thread."""
        loop = self._runtime.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the stop is over
                loop.call_soon_threadsafe(self._runtime.hurry)

    async def __aenter__(self) -> AppCore:
        _setup_logging(self.config.logs_default_level)
        await self._runtime.enter()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runtime.exit()

    async def serve(self) -> None:
        """Run until SIGINT or SIGTERM, then stop cleanly; another one while it stops
        cancels the running tasks now."""
        with stop_signals(self.hurry_stop) as stop:
            async with self:
                log.info("running; press Ctrl-C to stop")
                await stop.wait()

    def run_forever(self, num_workers: int | None = None) -> None:
        """Run the app in this thread until Ctrl-C (SIGINT) or SIGTERM, then stop cleanly.

        As QTasks' worker: with the default store, tasks come from the app's home, a
        SQLite file that a process importing this app's module adds to (`home.py`).
        `num_workers` (QTasks) sets `config.max_tasks_process`.
        """
        if run_forever_deferred(self):
            return
        if num_workers is not None:
            self.config.max_tasks_process = num_workers
        self.become_worker()
        try:
            with contextlib.suppress(KeyboardInterrupt):  # no loop signal handlers here
                asyncio.run(self.serve())
        finally:
            self.release_home()

    # ---------------------------------------------------------------- QTasks' worker/client

    def become_worker(self) -> None:
        """Run tasks that other processes importing this app add (QTasks' worker).

        With the default store (not yet opened), the store becomes the app's home, a
        SQLite file; the worker's lock there tells clients which kind of store it uses.
        """
        from .utils.tasks import ensure_link

        ensure_link(self)  # chains of pre-built calls run here (qtasks_mp.utils.tasks)
        home = self._home
        if home is None:
            return
        note = SHARED if self.store.shared else PRIVATE
        if self._default_store and not self._runtime.store_open:
            from .stores.sqlite import SQLiteStore

            home.db.parent.mkdir(mode=0o700, exist_ok=True)
            self.store = SQLiteStore(home.db)
            note = HOME
            log.info("app %r takes tasks from other processes through %s", self.name, home.db)
        elif self._default_store:  # opened already: an add_task started it in memory
            log.warning(
                "app %r started (an add_task before run_forever()) with its queue in "
                "memory, not in its home file %s: tasks still queued when it stops are "
                "lost, and other processes cannot add to it. Call run_forever() before "
                "adding tasks, or give the app store='sqlite:///tasks.db'",
                self.name,
                home.db,
            )
        home.hold(note)

    def release_home(self) -> None:
        if self._home is not None:
            self._home.release()

    def join_worker(self) -> None:
        """A stopped app whose store only this process sees, before it opens it: if a
        worker of this app runs on this machine (`run_forever()`), add tasks to its
        home (default store), or fail saying what to add (a store given here)."""
        home = self._home
        if home is None or self.store.shared or self._runtime.store_open:
            return
        with self._home_lock:  # threads of a sync app may get here together
            if self.store.shared:
                return
            note = home.worker()
            if note is None:
                return
            if note == HOME and self._default_store:
                from .stores.sqlite import SQLiteStore

                self.store = SQLiteStore(home.db)
                log.info("app %r: a worker runs it; tasks go to %s", self.name, home.db)
                return
            where = "the store of its worker" if note == HOME else "its worker's own store"
            raise AppNotRunning(
                f"app {self.name!r} runs in another process (run_forever()), and a task "
                f"added here would go to {type(self.store).__name__}, which only this "
                f"process sees, not to {where}. Give the app the same shared store on "
                'both sides: QueueTasks(store="sqlite:///tasks.db"), or leave store= out '
                "on both sides."
            )

    # ---------------------------------------------------------------- direct calls (hooks)

    def direct_record(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], priority: int | None
    ) -> tuple[TaskRecord, TaskSpec, Executor, Callable[[], Taken | None]] | None:
        """(A sync caller's thread; see executors/process/direct.py.) The record of a
        call that may go to its executor's worker without the loop, with its spec and
        executor; None if it must take the normal path: the app is not running, the
        task's route is not eager (middleware of the user's, events), the store is not
        this process's `MemoryStore`, the task is unique, rate-limited or not a plain
        function, its lane has calls waiting, or its executor has no worker free for
        direct calls (`executor.direct.available(spec)`). Bad input raises, as in
        `add_task`. Also returns what runs the call's side in the loop."""
        runtime = self._runtime
        dispatcher = runtime.dispatcher
        if (
            runtime.state is not RunState.RUNNING
            or dispatcher is None
            or type(task_name) is not str
        ):
            return None
        route = dispatcher.routes.get(task_name)
        store = runtime.store
        if route is None or not route.eager or type(store) is not MemoryStore:
            return None
        spec = route.spec
        assert isinstance(spec.executor, str)
        lane = dispatcher.lanes.get(spec.executor)
        if (
            spec.kind is not Kind.FUNCTION
            or spec.unique
            or lane is None
            or lane.inbox
            or lane.executor.capacity <= 0
            or task_name in store.rate_limits(lane.name)
        ):
            return None
        direct = getattr(lane.executor, "direct", None)  # a worker free for it, now?
        if direct is None or not direct.available(spec):
            return None
        record = self._new_record(task_name, args, kwargs, priority)
        return record, spec, lane.executor, functools.partial(self._run_taken, record, dispatcher)

    def _run_taken(self, record: TaskRecord, dispatcher: Dispatcher) -> Taken | None:
        """(In the loop.) A sync caller's direct call was sent (`direct_record`): accept
        `record` as running and run its chain, as `add_task` and a lane would; on the
        dispatcher of the run it was sent in, even if the app has begun to stop since
        (a stopping dispatcher still runs what it is given)."""
        runtime = self._runtime
        store = runtime.store
        assert type(store) is MemoryStore
        store.put_running(record)
        runtime.bind_loop().accepted()
        return dispatcher.run_taken(record)

    def progress_changed(self, record: TaskRecord) -> None:
        """A running task reported progress (`self.progress(...)`), from any thread."""
        self._runtime.progress.changed(record)

    def call_from_thread(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the app's loop from another thread and wait for its result."""
        loop = self.loop
        if loop is None or threading.get_ident() == self._runtime.loop_thread_id:
            coro.close()
            raise AppNotRunning(
                "a blocking call was made from inside the app's event loop (a plain function "
                "running inline?): make the task `async def` or give it executor='thread'"
            )
        return call_in_loop(loop, coro)


async def _answer(task: T) -> T:
    return task


_CANCEL_WAIT_S = 10.0  # app.cancel() of a task running in another process waits this long

_START_FIRST = (
    "Start the app first: put your code inside `async with app:` (or `await app.start()` "
    "... `await app.stop()`); a program without an event loop of its own uses the sync "
    "facade qtasks_mp.QueueTasks, which starts by itself. To hand tasks to another "
    'process, give both the same store="sqlite:///tasks.db".'
)


def _dashboard(app: AppCore, name: str, option: int | Mapping[str, Any]) -> Any:
    """The dashboard server for `QueueTasks(dashboard=8000)` or `dashboard={"port": ...,
    "host": ..., "token": ...}`; started and stopped with the app."""
    if isinstance(option, bool) or not isinstance(option, int | Mapping):
        raise SetupError(
            f"app {name!r}: dashboard= takes a port (an int) or a dict of port, host and "
            f"token, got {option!r}; pass dashboard=8000"
        )
    options = {"port": option} if isinstance(option, int) else dict(option)
    unknown = set(options) - {"port", "host", "token"}
    if unknown:
        raise SetupError(
            f"app {name!r}: dashboard= knows port, host and token, not {sorted(unknown)}"
        )
    from .web import missing_extra

    missing = missing_extra()
    if missing is not None:
        raise SetupError(
            f"app {name!r}: the dashboard needs the `web` extra ({missing} is missing); "
            "pip install 'qtasks-mp[web]'"
        )
    from .web import AppSource, DashboardServer

    return DashboardServer(AppSource(app), **options)


def _setup_logging(level: int) -> None:
    """Set our logger's level; give it a handler only if the program configured none."""
    logger = logging.getLogger("qtasks_mp")
    logger.setLevel(level)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        logger.addHandler(handler)
