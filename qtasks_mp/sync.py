"""The sync facade: the same app core, run in a background event-loop thread.

For plain programs (a script, a Flask view). Every method hands the core's coroutine
to that loop and waits for it; there is no second implementation. With a store that
only this process uses (the memory store), the first `add_task` starts the dispatcher
in the background and the program's exit drains it (`config.shutdown_timeout`).

Three hazards of threads and processes, and what this module does about them:

- Threads whose first `add_task` calls race (a web server's workers) would each send
  `core.start()` to the loop, and each could start a dispatcher. Starting and stopping
  hold one lock per app: one thread starts the app, the others wait and find it running.
- The program's end. A watcher thread (one per process, not a daemon) waits for the
  main thread to end and then for every other non-daemon thread, as the interpreter
  does, and drains the running apps: queued and running tasks get `shutdown_timeout`,
  then each app stops. This runs before any `atexit` hook (yours, or multiprocessing's,
  which would stop process workers that still have tasks to finish), as the hook of
  `threading` that this replaces did, without that private hook.
  By then the standard library's thread pools refuse work and no new one can be made
  (and Python 3.12.0-3.12.1 start no thread at all), so the loop's default executor
  (`run_in_executor(None, ...)`, `asyncio.to_thread`) is `Threads` of our own, started
  with the loop, as are the thread executor's.
- `os.fork()` (and a fork-context `multiprocessing` pool, a forking server) copies the
  app objects into the child, but no thread: not the loop, not the watcher. An
  `os.register_at_fork` hook marks each running app as the parent's in the child, where
  its calls raise `AppNotRunning` instead of waiting forever on a loop nobody runs,
  and resets this module's state, so the child exits normally and its own apps work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from .app import AppCore
from .checks import INF, SECONDS_TYPES
from .config import QueueConfig
from .errors import AppNotRunning
from .events import Events
from .executors.base import Executor
from .executors.process.direct import LATE, DirectCalls
from .executors.thread import Threads
from .handoff import WAKE_S, call_in_loop
from .lifecycle import SignalPipe, leave_now, run_forever_deferred
from .middleware.base import Middleware
from .progress import ProgressCallback
from .registration import TaskDecorator
from .routers import Router
from .routers import attach as shared_tasks_attach
from .stores.base import Store
from .task import Task, TaskStatus

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("qtasks_mp")

LOOP_EXECUTOR_THREADS = 4  # calls past this many at once wait their turn
_NOT_DIRECT = object()  # `_add_direct`: take the normal path


class _LoopExecutor(ThreadPoolExecutor):
    """The portal loop's default executor, on `Threads` that nothing else shuts down.

    A `ThreadPoolExecutor` by type only, since `loop.set_default_executor` takes no
    other: `submit` and `shutdown` are replaced, and none of its own threads start.
    """

    def __init__(self) -> None:
        super().__init__(LOOP_EXECUTOR_THREADS)
        self._own = Threads(LOOP_EXECUTOR_THREADS, "qtasks_mp-loop-executor")

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._own.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._own.close(cancel_futures)
        if wait:
            self._own.join()


class _Portal:
    """An event loop running in a daemon thread, and a way to call into it.

    Daemon, because the exit watcher waits for every non-daemon thread before it
    drains the app and stops this loop.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: _LoopExecutor | None = None
        self._lock = threading.Lock()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                self._executor = _LoopExecutor()
                self.loop.set_default_executor(self._executor)
                self._thread = threading.Thread(
                    target=self.loop.run_forever, name="qtasks_mp-loop", daemon=True
                )
                self._thread.start()
            loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking app call was made from inside the app's own loop")
        return call_in_loop(loop, coro)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def close(self) -> None:
        with self._lock:
            loop, thread, self.loop, self._thread = self.loop, self._thread, None, None
            executor, self._executor = self._executor, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        if executor is not None:
            executor.shutdown(wait=True)


class _Stopper:
    """`app.stop()` in a thread of its own (`run_forever` watches for signals meanwhile)."""

    def __init__(self, app: QueueTasks) -> None:
        self.done = threading.Event()
        self._error: BaseException | None = None
        self._app = app
        threading.Thread(target=self._run, name="qtasks_mp-stop").start()

    def _run(self) -> None:
        try:
            self._app.stop()
        except BaseException as e:  # raised in the caller's thread (`result`)
            self._error = e
        finally:
            self.done.set()

    def result(self) -> None:
        if self._error is not None:
            raise self._error


# Every sync app of this process (weak: apps may be dropped), and the exit watcher.
_apps: weakref.WeakSet[QueueTasks] = weakref.WeakSet()
_exit_lock = threading.Lock()  # guards the three (a WeakSet is not safe to iterate while added to)
_exit_watcher: threading.Thread | None = None
_program_ending = False  # the watcher drains now: no app starts any more


def _watch_for_exit() -> None:
    global _exit_watcher
    with _exit_lock:
        if _exit_watcher is None:
            _exit_watcher = threading.Thread(target=_drain_all_at_exit, name="qtasks_mp-exit")
            _exit_watcher.start()


def _drain_all_at_exit() -> None:
    """The exit watcher: wait until the program's threads have ended, then drain (or
    stop, if the program ended with Ctrl-C)."""
    global _program_ending
    main, me = threading.main_thread(), threading.current_thread()
    main.join()  # returns once the main thread has finished the program
    # An exception the program did not catch, as Python printed it (3.12+: last_exc).
    # Not in an interactive session: there, every exception printed is kept there,
    # though the session went on and ended normally.
    ended_with = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    interactive = hasattr(sys, "ps1") or sys.flags.interactive
    interrupted = isinstance(ended_with, KeyboardInterrupt) and not interactive
    while True:  # a thread we join may start another: look again until none is left
        others = [t for t in threading.enumerate() if not t.daemon and t not in (main, me)]
        if not others:
            break
        for t in others:
            t.join()
    with _exit_lock:
        _program_ending = True
        apps = list(_apps)
    for app in apps:
        try:
            app._drain_at_exit(interrupted)
        except Exception:
            log.exception("app %r: draining at exit failed", app.core.name)


def _after_fork_in_child() -> None:
    """In the child (its only thread): no watcher, no loop, fresh locks."""
    global _exit_lock, _exit_watcher, _program_ending
    _exit_lock = threading.Lock()
    _exit_watcher = None
    _program_ending = False
    for app in list(_apps):
        app._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX: where a process can fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class QueueTasks:
    """The app, sync: `app.add_task(...)` blocks until the task is accepted.

    `@app.task`, `app.config`, `app.executors` and `app.stats()` are the core's.
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
        self.core = AppCore(
            name,
            store=store,
            config=config,
            middlewares=middlewares,
            executors=executors,
            dashboard=dashboard,
        )
        self.core._registry.facade = self  # `my_task.add_task(...)` blocks, as here
        self._portal = _Portal()
        # Held while starting or stopping, never while a task runs: see the module doc.
        self._lifecycle = threading.Lock()
        self._parent_pid: int | None = None  # set in a forked child of a running app
        with _exit_lock:
            _apps.add(self)
        shared_tasks_attach(self)  # QTasks' shared tasks are tasks of every app

    # The core's own objects, typed: registration and configuration are not async.
    @property
    def task(self) -> TaskDecorator:
        return self.core.task

    @property
    def config(self) -> QueueConfig:
        return self.core.config

    @property
    def executors(self) -> dict[str, Executor]:
        return self.core.executors

    @property
    def events(self) -> Events:
        """QTasks' `app.events.on.<event>()`; handlers run in the app's loop thread."""
        return self.core.events

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def running(self) -> bool:
        return self._parent_pid is None and self.core.running

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def include_router(self, router: Router) -> None:
        """Register the tasks of a QTasks router (`qtasks_mp.routers`) on this app."""
        router.include_into(self)

    def _call(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run the core coroutine `fn(*args, **kwargs)` where the core runs: our
        background loop, or the loop of a program that started the core itself (e.g.
        `AsyncTimer(app).run_forever()`). Made just before it is handed over: a Ctrl-C
        in what comes before leaves no coroutine never awaited."""
        if self._parent_pid is not None:
            raise self._forked_error()
        self._flush_direct()
        loop = self.core.loop
        if self.core.running and loop is not None and loop is not self._portal.loop:
            return self.core.call_from_thread(fn(*args, **kwargs))
        return self._portal.call(fn(*args, **kwargs))

    def _flush_direct(self) -> None:
        """What direct calls left the loop to record goes before this thread's next
        call into the loop (`app.get(uuid)` right after a direct call sees its end)."""
        self.core.post_direct_calls()

    def _auto_start(self) -> None:
        if not self.core.running and not self.core.store.shared:
            self.core.join_worker()  # QTasks' client: a worker of this app runs elsewhere
            if not self.core.store.shared:
                self.start()

    def add_task(
        self,
        task_name: str,
        *args: Any,
        priority: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        **kwargs: Any,
    ) -> Task | None:
        """Queue a task; with `timeout=` wait for the finished `Task` (None on timeout)."""
        if not self.core.running:  # bad input is refused before the app starts for it
            self.core.check_call(
                task_name, *args, priority=priority, unique_key=unique_key, **kwargs
            )
        self._auto_start()
        if timeout is not None and unique_key is None:
            done = self._add_direct(task_name, args, kwargs, priority, timeout)
            if done is not _NOT_DIRECT:
                return done  # type: ignore[return-value]
        return self._call(
            self.core.add_task_awaited,
            task_name,
            *args,
            priority=priority,
            timeout=timeout,
            unique_key=unique_key,
            **kwargs,
        )

    def _add_direct(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int | None,
        timeout: float,
    ) -> Task | object | None:
        """A waited call handed to a worker process by this thread itself, with the
        app's loop off the critical path (executors/process/direct.py); `_NOT_DIRECT`
        if it must take the normal path (nothing accepted then)."""
        core, loop = self.core, self._portal.loop
        if (
            loop is None
            or core.loop is not loop
            or self._parent_pid is not None
            or type(timeout) not in SECONDS_TYPES
            or not 0 < timeout < INF
            or threading.current_thread() is self._portal.thread
        ):
            return _NOT_DIRECT
        found = core.direct_record(task_name, args, dict(kwargs), priority)
        if found is None:
            return _NOT_DIRECT
        record, spec, executor, accept = found
        direct = getattr(executor, "direct", None)
        if not isinstance(direct, DirectCalls):
            return _NOT_DIRECT
        started = time.monotonic()
        outcome = direct.call(spec, record, timeout, accept)
        if outcome is None:
            return _NOT_DIRECT
        how, value = outcome
        if how == "ok":
            task = Task(record, core)  # the loop records the same ending meanwhile
            task.status, task.returning, task.traceback = TaskStatus.SUCCESS, value, None
            return task
        if how == LATE:
            return None  # the call goes on; the loop records its end
        left = max(0.0, timeout - (time.monotonic() - started))
        return self._call(core.wait, record.uuid, left)

    def map(
        self,
        task_name: str,
        iterable: Iterable[Any],
        *,
        chunksize: int = 1,
        timeout: float | None = None,
        progress: bool | ProgressCallback = False,
    ) -> list[Any]:
        """The results of `task_name` over `iterable`, in order; see the async `map`."""
        self._auto_start()
        return self._call(
            self.core.map,
            task_name,
            iterable,
            chunksize=chunksize,
            timeout=timeout,
            progress=progress,
        )

    def get(self, uuid: UUID | str) -> Task | None:
        return self._call(self.core.get, uuid)

    def wait(self, uuid: UUID | str, timeout: float | None = None) -> Task | None:
        return self._call(self.core.wait, uuid, timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._call(self.core.wait_idle, timeout)

    def cancel(self, task: UUID | str | Task) -> bool:
        """Cancel a queued or running task; see the async `cancel`."""
        return self._call(self.core.cancel, task)

    def requeue(self, task: UUID | str | Task) -> Task:
        """Queue a task that ended error or cancel again; see the async `requeue`."""
        return self._call(self.core.requeue, task)

    def start(self) -> None:
        """Start the app, or return once it runs. A failed start raises its error here.

        Calls from several threads at once start it once: the others wait for that
        start and return (or raise its error if it failed, after trying again).
        """
        if self._parent_pid is not None:
            raise self._forked_error()
        with self._lifecycle:
            if _program_ending:
                raise AppNotRunning(
                    f"app {self.core.name!r} cannot start: the program is ending (its apps "
                    "have been drained and stopped)"
                )
            if not self.core.running:
                _watch_for_exit()
                self._portal.call(self.core.start())

    def stop(self) -> None:
        """Stop: running tasks get `config.shutdown_timeout`; queued ones are not run.

        In a forked child of the process that runs the app, it does nothing: the app
        does not run there.
        """
        if self._parent_pid is not None:
            return
        # Under the lock: closing the loop while another thread's start() waits on it
        # would leave that thread waiting forever.
        with self._lifecycle:
            if self.core.running:
                self._call(self.core.stop)
            self._portal.close()

    def _drain_at_exit(self, interrupted: bool) -> None:
        """The program is ending: let queued and running tasks finish, within
        shutdown_timeout. After Ctrl-C (`interrupted`), stop at once as `stop()` does:
        the running tasks get shutdown_timeout to finish, the queued ones are not run
        (a durable store keeps them for the next start)."""
        with self._lifecycle:  # a start under way ends first
            running = self.running
        if not running:
            return
        if interrupted:
            log.warning(
                "app %r: the program was interrupted (Ctrl-C): stopping, queued tasks are "
                "not run; running ones get up to %s s (config.shutdown_timeout)",
                self.core.name,
                self.core.config.shutdown_timeout,
            )
        else:
            self.wait_idle(timeout=self.core.config.shutdown_timeout)
        self.stop()

    def _after_fork_in_child(self) -> None:
        """In a forked child (the only thread there): disown an app the parent runs."""
        self._lifecycle = threading.Lock()  # another thread may have held it at the fork
        if self._portal.loop is None and not self.core.running:
            self._portal = _Portal()  # not running: usable here like a new app
            return
        # The copied loop, its thread gone, is left alone: closing it here could only
        # touch the parent's objects in our copy of them.
        self._parent_pid = os.getppid()

    def _forked_error(self) -> AppNotRunning:
        return AppNotRunning(
            f"app {self.core.name!r} runs in process {self._parent_pid}, and this process "
            "is a fork of it: the app's event loop thread does not exist here. Create the "
            "app in the child, or start children with the 'spawn' or 'forkserver' method"
        )

    def __enter__(self) -> QueueTasks:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def run_forever(self, num_workers: int | None = None) -> None:
        """Run until Ctrl-C (SIGINT) or SIGTERM, then stop cleanly. Call from the main thread.

        `num_workers` (QTasks: its worker threads) sets `config.thread_workers`.
        """
        if run_forever_deferred(self):
            return
        if num_workers is not None:
            self.config.thread_workers = num_workers
        with SignalPipe() as signals:  # seen in whichever thread they land (lifecycle.py)
            try:
                self.core.become_worker()  # QTasks' worker: clients add tasks from elsewhere
                self.start()
                log.info("running; press Ctrl-C to stop")
                log.info("%s received: stopping", signals.wait())
                # The stop runs in a thread of its own, so that this one sees a second
                # signal meanwhile: it cancels the running tasks now.
                stopper = _Stopper(self)
                hurried = False
                while not stopper.done.is_set():
                    again = signals.wait(WAKE_S)
                    if again is not None and not hurried:
                        log.warning("%s again: cancelling the running tasks now", again)
                        self.core.hurry_stop()
                        hurried = True
                    elif again is not None:  # a stop that hangs: out, at once
                        leave_now(again)
                stopper.result()
            finally:
                try:
                    self.stop()  # (stopped already, unless something above failed)
                finally:
                    self.core.release_home()
