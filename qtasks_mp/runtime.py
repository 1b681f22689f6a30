"""One app's running part: the loop it is bound to, the store opened, the executors
started, the dispatcher, and the run state that says which of these exist.

    stopped ──start()──> starting ──ok──> running ──stop()──> stopping ──> stopped
                            │                                    ^
                            └──── a step failed: undo, raise ────┘ (back to stopped)

`Runtime` is the only owner of that state; the app asks it (`state`, `dispatcher`,
`waiters`). It knows the app only through what it is handed: the name, store, config,
the executors and task specs (read), a `TaskHost` for task contexts, how to build a
task's `Route`, and how to size an executor from the config.

- A `start()` while starting joins the start under way and raises what it raised; a
  `stop()` while stopping joins that stop.
- A start that fails closes what it had started (executors, worker processes, the
  store) and raises.
- `stop()` closes every executor started, whatever failed before it.
- An executor that a task brings in after the start is started in the background
  (`start_lane`); its failure is raised to `add_task` for that lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol
from uuid import UUID

from .config import QueueConfig
from .context import TaskHost
from .dispatcher import Dispatcher, Route
from .errors import AppNotRunning
from .events import Events
from .executors.base import Executor
from .lifecycle import RunState
from .registries import TaskSpec
from .stores.base import Store
from .task import FINISHED, TaskRecord
from .task_progress import ProgressSaver
from .waiters import Waiters

log = logging.getLogger("qtasks_mp")


class Service(Protocol):
    """Something that runs beside the app while it runs (the dashboard's web server):
    started after the dispatcher (its failure fails the start), stopped first."""

    async def start(self) -> object: ...

    async def stop(self) -> None: ...


class Runtime:
    def __init__(
        self,
        name: str,
        store: Store,
        config: QueueConfig,
        executors: Mapping[str, Executor],
        specs: Mapping[str, TaskSpec],
        host: TaskHost,
        route: Callable[[TaskSpec], Route],
        size: Callable[[str, Executor], None],
        events: Events,
    ) -> None:
        self.name = name
        self.store = store
        self.config = config
        self._executors = executors
        self._specs = specs
        self._host = host
        self._route = route
        self._size = size
        self._events = events
        self._tell_ended = False  # a task_success/error/cancel handler (read at start)
        self._services: list[Service] = []
        self._services_started: list[Service] = []
        self.state = RunState.STOPPED
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id: int | None = None
        self.waiters: Waiters | None = None  # of the loop the app is bound to
        self.dispatcher: Dispatcher | None = None
        # The last run's dispatcher once a stop took it (it keeps whether it was hurried).
        self._stopping: Dispatcher | None = None
        self._transition: asyncio.Future[None] | None = None  # the start/stop under way
        self._users = 0  # `async with app` blocks inside: the last one out stops it
        self._started: dict[str, Executor] = {}  # lane -> executor started for this run
        self._late: dict[str, asyncio.Future[None]] = {}  # lanes starting after the app
        self._routes: dict[str, Route] = {}  # task name -> how to run it
        self._background: set[asyncio.Task[None]] = set()
        self._store_open = False
        self._store_lock = asyncio.Lock()  # concurrent first add_task calls open it once
        #: the progress running tasks report, saved to the store a few times a second
        self.progress = ProgressSaver()

    def add_service(self, service: Service) -> None:
        """Run `service` beside the app from its next start on."""
        self._services.append(service)

    @property
    def store_open(self) -> bool:
        return self._store_open

    def use_store(self, store: Store) -> None:
        if self._store_open:
            raise AppNotRunning(
                f"app {self.name!r} has opened its store {self.store!r} already; choose the "
                "store before the app starts or adds a task (QueueTasks(store=...))"
            )
        self.store = store

    @property
    def active(self) -> int:
        return sum(e.active for e in self._started.values())

    # ------------------------------------------------------------ the loop and the store

    def check_loop(self, what: str) -> None:
        if asyncio.get_running_loop() is not self.loop:
            raise AppNotRunning(
                f"{what}: app {self.name!r} runs in another event loop; from another thread "
                "use the sync facade (qtasks_mp.QueueTasks) or app.call_from_thread()"
            )

    def bind_loop(self) -> Waiters:
        """The waiters of the running loop; binds the app to it while it is stopped."""
        loop = asyncio.get_running_loop()
        waiters = self.waiters
        if waiters is None or waiters.loop is not loop:
            if self.state is not RunState.STOPPED:
                self.check_loop(f"app {self.name!r}")
            # asyncio primitives belong to one loop: a stopped app may move to another
            unfinished = 0 if waiters is None else waiters.unfinished
            waiters = self.waiters = Waiters(loop, self._host, self._read, unfinished)
            self.loop = loop
            self.loop_thread_id = threading.get_ident()
            self._store_lock = asyncio.Lock()
        return waiters

    async def open_store(self) -> None:
        if not self._store_open:
            self.bind_loop()
            async with self._store_lock:
                if not self._store_open:
                    await self.store.open(self.config, self._store_changed)
                    self.store.watch_cancels(self._cancels_requested)
                    self._store_open = True

    def _store_changed(self) -> None:
        """The store says another process changed it: new tasks, or finished ones.

        Called from any thread. Wakes the dispatcher, and re-reads the tasks someone
        here waits for (a producer's `add_task(timeout=...)` sees another process finish).
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(self._on_store_changed)

    def _cancels_requested(self, uuids: list[UUID]) -> None:
        """(In the loop.) Another process asked to cancel tasks our store leased to us."""
        dispatcher = self.dispatcher
        if dispatcher is not None:
            for uuid in uuids:
                dispatcher.cancel(uuid)

    def _on_store_changed(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if self.waiters is not None:
            self.waiters.recheck()

    async def _read(self, uuid: UUID) -> TaskRecord | None:
        return await self.store.get(uuid)  # the store in use now (see use_store)

    def _finished(self, record: TaskRecord) -> None:
        """The dispatcher's one finishing path ends here, when a task_success/error/cancel
        handler listens (otherwise it calls the waiters itself): wake the task's waiters,
        then tell the handlers."""
        assert self.waiters is not None
        self.waiters.finished(record)
        self._events.ended(record)

    # ------------------------------------------------------------ lanes

    def registered(self, spec: TaskSpec) -> None:
        """A task registered while the app runs: route it, and start its executor if new.
        May be called from any thread."""
        dispatcher, loop = self.dispatcher, self.loop
        if dispatcher is None or loop is None:
            return  # start() routes every task
        self._route_task(spec)
        assert isinstance(spec.executor, str)
        if spec.executor not in dispatcher.lanes:
            loop.call_soon_threadsafe(self.start_lane, spec.executor)

    def _route_task(self, spec: TaskSpec) -> None:
        self._routes[spec.name] = self._route(spec)
        if spec.rate_interval_s is not None:  # the store hands them out at that pace
            assert isinstance(spec.executor, str)
            self.store.limit_rate(spec.name, spec.executor, spec.rate_interval_s)

    def start_lane(self, key: str) -> asyncio.Future[None]:
        """(In the app's loop.) Start the executor of a lane that came after the app
        started, once; the future of that start, whose failure `add_task` raises."""
        fut = self._late.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._late[key] = loop.create_future()
            task = loop.create_task(self._start_late(key, fut))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return fut

    async def _start_late(self, key: str, fut: asyncio.Future[None]) -> None:
        dispatcher = self.dispatcher
        executor = self._executors[key]
        try:
            if dispatcher is None:
                raise AppNotRunning(f"app {self.name!r} stopped before executor {key!r} started")
            executor.attach(key, dispatcher.wake, shared_store=self.store.shared)
            await executor.start()
        except Exception as e:
            await close_quietly(executor, key)
            del self._late[key]  # the next task for this lane tries again
            log.error("executor %r failed to start: %s: %s", key, type(e).__name__, e)
            fut.set_exception(
                AppNotRunning(
                    f"executor {key!r} of app {self.name!r} could not start: "
                    f"{type(e).__name__}: {e}. Its tasks are not accepted until it can."
                )
            )
            fut.exception()  # the failure is reported to add_task callers, not as unretrieved
            return
        if self.dispatcher is not dispatcher:  # the app stopped meanwhile
            await close_quietly(executor, key)
            fut.set_result(None)
            return
        self._started[key] = executor
        dispatcher.add_lane(key, executor)
        fut.set_result(None)

    async def lane_ready(self, key: str) -> None:
        """Return once `key`'s executor runs; raise if it cannot start."""
        dispatcher = self.dispatcher
        if dispatcher is not None and key not in dispatcher.lanes:
            self.check_loop(f"executor {key!r}")
            await asyncio.shield(self.start_lane(key))

    # ------------------------------------------------------------ start and stop

    async def start(self) -> None:
        while self.state is not RunState.STOPPED:
            self.check_loop(f"app {self.name!r}")
            if self.state is RunState.RUNNING:
                return
            assert self._transition is not None
            await asyncio.shield(self._transition)  # a start under way raises its failure
        self.bind_loop()
        self.state = RunState.STARTING
        transition = self._transition = asyncio.get_running_loop().create_future()
        try:
            await self._events.fire("starting")
            await self._start_run()
        except BaseException as e:
            try:
                await self._close_run()
            finally:
                self.state = RunState.STOPPED
                transition.set_exception(e)
                transition.exception()  # raised here; joiners get it from the future
            raise
        self.state = RunState.RUNNING
        transition.set_result(None)
        log.info(
            "app %r started: %d tasks, executors %s",
            self.name,
            len(self._specs),
            ", ".join(f"{k}({e.size_label()})" for k, e in self._started.items()),
        )
        await self._events.fire("worker_running")

    async def _start_run(self) -> None:
        self._stopping = None
        waiters = self.bind_loop()
        self._tell_ended = self._events.wants_ended()
        await self.open_store()
        self.progress.start(self.store, asyncio.get_running_loop())
        # Without a task_success/error/cancel handler, the end goes straight to the
        # waiters (one call less per task).
        finished = self._finished if self._tell_ended else waiters.finished
        dispatcher = Dispatcher(self.store, self._routes, self._host, waiters.deadlines, finished)
        self.dispatcher = dispatcher
        waiters.lending = dispatcher.lending  # a running call's waits lend its slot
        for key, executor in list(self._executors.items()):
            self._size(key, executor)
            executor.attach(key, dispatcher.wake, shared_store=self.store.shared)
            try:
                await executor.start()
            except Exception as e:
                log.error(
                    "app %r: executor %r failed to start (%s: %s); closing what had started",
                    self.name,
                    key,
                    type(e).__name__,
                    e,
                )
                await close_quietly(executor, key)
                raise
            self._started[key] = executor
            dispatcher.add_lane(key, executor)
        for spec in list(self._specs.values()):
            self._route_task(spec)
        dispatcher.start()
        for service in self._services:
            await service.start()
            self._services_started.append(service)

    async def stop(self) -> None:
        while self.state is not RunState.RUNNING:
            if self.state is RunState.STOPPED:
                return
            assert self._transition is not None
            with contextlib.suppress(Exception):  # a failed start has stopped already
                await asyncio.shield(self._transition)
        self.state = RunState.STOPPING
        transition = self._transition = asyncio.get_running_loop().create_future()
        try:
            await self._events.fire("worker_stopping")
            await self._close_run()
            # (hurried by a second Ctrl-C: the handlers still running are cancelled now)
            hurried = self._stopping is not None and self._stopping.hurried
            await self._events.drain(0.0 if hurried else self.config.shutdown_timeout)
        finally:
            self.state = RunState.STOPPED
            transition.set_result(None)
        await self._events.fire("stopping")

    def hurry(self) -> None:
        """(Loop.) The stop under way, or the next one, cancels the running tasks at
        once (a second Ctrl-C, which may come before the stop reaches the dispatcher)."""
        dispatcher = self.dispatcher or self._stopping
        if dispatcher is not None:
            dispatcher.hurry()

    async def enter(self) -> None:
        await self.start()
        self._users += 1

    async def exit(self) -> None:
        self._users -= 1
        if self._users <= 0:  # nested `async with app`: the outermost one stops it
            self._users = 0
            await self.stop()

    async def _close_run(self) -> None:
        """Undo a start, in full or in part: stop the dispatcher, close every executor
        started and the store. A step that fails is logged; the others still run."""
        while self._services_started:
            service = self._services_started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("app %r: stopping %r failed", self.name, service)
        dispatcher, self.dispatcher = self.dispatcher, None
        self._stopping = dispatcher
        waiters = self.waiters
        done = cancelled = dropped = 0
        try:
            if dispatcher is not None:
                done, cancelled = await dispatcher.stop(self.config.shutdown_timeout)
            if self._store_open:
                await self.progress.stop()
            if self._store_open and not self.store.shared:
                dropped = await self.store.drop_queued()
            if waiters is not None and self._store_open:
                for uuid in waiters.waited_for():
                    record = await self.store.get(uuid)
                    if record is not None and record.status in FINISHED:
                        waiters.resolve(record)
        except Exception:
            log.exception("app %r: stopping the dispatcher failed", self.name)
        finally:
            if waiters is not None and not self.store.shared:
                waiters.forget_unfinished()
            for task in list(self._background):
                task.cancel()
            self._late.clear()
            started, self._started = self._started, {}
            for key, executor in started.items():
                await close_quietly(executor, key)
            self._routes.clear()
            if self._store_open:
                self._store_open = False
                try:
                    await self.store.close()
                except Exception:
                    log.exception("app %r: closing the task store failed", self.name)
        if dispatcher is not None:
            msg = "app %r stopped: %d running tasks finished, %d cancelled, %d queued tasks not run"
            level = logging.WARNING if cancelled or dropped else logging.INFO
            log.log(level, msg, self.name, done, cancelled, dropped)


async def close_quietly(executor: Executor, key: str) -> None:
    """Close an executor (cancelling what it still runs) and detach it; log a failure."""
    try:
        await executor.aclose(cancel_pending=True)
    except Exception:
        log.exception("executor %r failed to close", key)
    finally:
        executor.attach(key, None)
