"""`ThreadExecutor`: runs blocking functions in threads of its own (`Threads`).

```text
 run(call) ──submit──> Threads: one SimpleQueue ──> N daemon threads: run_in_thread(call)
     ^                                                  │
     └──── asyncio.wrap_future(future) <── future.set_result / set_exception
 aclose() ──close()──> one stop marker per thread, behind the queued calls ──> on_gone()
```

Why not `concurrent.futures.ThreadPoolExecutor`: the standard library shuts every such
pool down as the program ends, before the sync facade's exit drain runs, and refuses
new work (and new pools) from then on. Python 3.12.0 and 3.12.1 also refuse to start
a thread by then (3.10, 3.11 and 3.13 allow it), so `Threads` starts all of its
threads at once, up front.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..errors import TaskTimeout
from ..lending import running_call
from ..registries import Kind
from .base import Call, Executor, run_in_thread, within

T = TypeVar("T")

# A call and its future, or a stop marker: what a thread calls on its way out.
# A marker returns True if the thread that took it goes on (see `_work`).
_Item = tuple[Future[Any], Callable[[], Any]] | Callable[[], bool | None]


class Threads:
    """`n` daemon threads, all started now, running calls from one queue.

    Daemon threads, because the interpreter joins every non-daemon thread before the
    sync facade's exit drain can tell these to stop: the program would never end.
    """

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._name = name
        self._lock = threading.Lock()  # guards `_threads` and `_closed` (`retire`)
        self._threads = [self._thread(f"{name}-{i}") for i in range(n)]
        for t in self._threads:
            t.start()
        self._closed = False
        self._extra = 0  # threads started by `add` and not retired yet

    def __len__(self) -> int:
        """Threads running now (more than asked while blocked calls lent their slots)."""
        return len(self._threads)

    def _thread(self, name: str) -> threading.Thread:
        return threading.Thread(target=_work, args=(self._jobs,), name=name, daemon=True)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; its future. Cancelling it before it starts skips it."""
        if self._closed:
            raise RuntimeError("these threads were closed")
        # A stdlib Future, as the handle an Executor implementation gives: it settles,
        # under its own lock, the race between a thread starting the call and the caller
        # cancelling it (`set_running_or_notify_cancel`).
        future: Future[T] = Future()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def add(self) -> bool:
        """Start one thread more (a blocked call lent its slot); False if none can start
        (closed, or the interpreter is ending)."""
        with self._lock:
            if self._closed:
                return False
            t = self._thread(f"{self._name}-extra")
            try:
                t.start()
            except RuntimeError:  # (Python 3.12.0/3.12.1 at exit: see the module doc)
                return False
            self._threads.append(t)
            self._extra += 1
            return True

    def retire(self) -> None:
        """One thread fewer: the first to be free after the calls queued now ends (the
        lent slot is back). Undoes one `add`."""
        self._jobs.put(self._retire_one)

    def _retire_one(self) -> bool:
        """(A thread, at a retire marker.) Whether it goes on: yes once closing, when
        every thread ends at a stop marker of its own."""
        with self._lock:
            if self._closed or not self._extra:
                return True
            self._extra -= 1
            self._threads.remove(threading.current_thread())
            return False

    def close(
        self, cancel_pending: bool = False, on_gone: Callable[[], None] = lambda: None
    ) -> None:
        """Stop: each thread ends after the calls queued before (cancelled if
        `cancel_pending`); the last one to end calls `on_gone`. Returns at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while cancel_pending and not self._jobs.empty():
            with contextlib.suppress(queue.Empty):  # threads may take some meanwhile
                item = self._jobs.get_nowait()
                if isinstance(item, tuple):
                    item[0].cancel()
        left = len(self._threads)
        lock = threading.Lock()

        def one_gone() -> None:  # runs in each thread as it ends
            nonlocal left
            with lock:
                left -= 1
                last = left == 0
            if last:
                on_gone()

        for _ in self._threads:
            self._jobs.put(one_gone)

    def join(self) -> None:
        for t in self._threads:
            t.join()


def _work(jobs: queue.SimpleQueue[_Item]) -> None:
    """A thread of `Threads`: run calls until a marker says it ends (a stop marker, or
    a retire marker it ends at)."""
    while True:
        item = jobs.get()
        if not isinstance(item, tuple):
            if item():
                continue
            return
        future, fn = item
        del item
        if future.set_running_or_notify_cancel():  # False: cancelled before it started
            try:
                future.set_result(fn())
            except BaseException as e:  # as concurrent.futures does: the caller gets it
                future.set_exception(e)
        del future, fn  # hold no result or traceback while idle


class ThreadExecutor(Executor):
    """`max_workers` threads. A timeout fails the task but cannot stop the thread.

    Python cannot interrupt a running thread, so a timed-out call keeps its thread
    (and its slot: `capacity` counts it) until the function returns by itself.
    """

    name = "thread"
    eager = True
    kinds = frozenset({Kind.FUNCTION, Kind.GENERATOR})

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.max_workers = max_workers or 8
        self.overrun = 0  # timed-out calls whose thread is still running
        self.lent = 0  # slots lent by calls blocked waiting for other tasks: threads more
        #: At most this many threads more for blocked calls (then a wait keeps its slot).
        self.max_lent = max(32, 4 * self.max_workers)
        self._threads: Threads | None = None
        self._waits: dict[Call, asyncio.Future[Any]] = {}  # what `run` awaits, per call

    @property
    def slots(self) -> int:
        return self.max_workers + self.lent

    @property
    def capacity(self) -> int:
        return self.max_workers + self.lent - self.active - self.overrun

    async def start(self) -> None:
        if self._threads is None:
            self._threads = Threads(self.max_workers, "qtasks_mp-thread")

    def lend(self) -> bool:
        """A call blocked waiting for another task: a thread more runs another call,
        up to `max_lent` threads more (each is an OS thread)."""
        if self.lent >= self.max_lent or self._threads is None or not self._threads.add():
            return False
        self.lent += 1
        self.wakeup()
        return True

    def give_back(self) -> None:
        self.lent -= 1
        if self._threads is not None:
            self._threads.retire()

    async def run(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        assert self._threads is not None, "ThreadExecutor.run before start()"
        # In the caller's context, with this call as the one running (lending.py): what
        # the thread waits for lends this call's slot.
        context = contextvars.copy_context()
        context.run(running_call.set, call)
        job = self._threads.submit(context.run, run_in_thread, call, loop)
        fut = asyncio.wrap_future(job, loop=loop)  # cancelling it cancels a job not started
        timeout = call.spec.timeout
        self._waits[call] = fut
        try:
            if timeout is None or await within(fut, timeout):
                return await fut
        except asyncio.CancelledError:  # the app stops, or `cancel`; a started thread goes on
            self._left_running(job, fut, loop)
            raise
        finally:
            del self._waits[call]
        self._left_running(job, fut, loop)
        raise TaskTimeout(
            call.task_name,
            timeout,
            "a thread cannot be stopped, so the function keeps running in its thread "
            "(holding one slot) until it returns; use executor='process' for a hard limit",
        )

    def cancel(self, call: Call) -> bool:
        """A thread cannot be stopped: `run` stops waiting at once (the call ends
        `cancel`), the function goes on in its thread (holding its slot, as after a
        timeout) and what it returns is discarded. Its context's `cancelled` is True."""
        fut = self._waits.get(call)
        if fut is None:
            return False
        fut.cancel()
        return True

    def _left_running(
        self, job: Future[Any], fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        """The task gave up on a call whose thread goes on: keep its slot counted."""
        fut.add_done_callback(_retrieve)  # its outcome no longer matters to anyone
        if not job.done():  # (cancelling `fut` cancelled `job` if it had not started)
            self.overrun += 1
            job.add_done_callback(lambda _: _call_soon(loop, self._thread_returned))

    def _thread_returned(self) -> None:
        self.overrun -= 1
        self.wakeup()

    async def aclose(self, cancel_pending: bool = False) -> None:
        threads, self._threads = self._threads, None
        if threads is None:
            return
        loop = asyncio.get_running_loop()
        gone = loop.create_future()

        def set_gone() -> None:
            if not gone.done():
                gone.set_result(None)

        threads.close(cancel_pending, on_gone=lambda: _call_soon(loop, set_gone))
        # Threads that overran their timeout, or were cancelled at shutdown, may run on:
        # do not wait for them (as daemon threads they end with the program at the latest).
        if self.overrun == 0:
            await gone

    def stats(self) -> dict[str, Any]:
        threads = 0 if self._threads is None else len(self._threads)
        return {**super().stats(), "overrun": self.overrun, "lent": self.lent, "threads": threads}


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
        loop.call_soon_threadsafe(fn)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved: the task already failed or was cancelled
