"""`ThreadExecutor`: runs blocking functions in threads of its own.

```text
 run(call) ──(future, call, loop)──> SimpleQueue ──> N daemon threads: run_in_thread(call)
     ^                                                   │
     └───── asyncio.wrap_future(future) <── future.set_result / set_exception
 aclose() ──(one stop marker per thread)──> each thread ends, tells the loop ──> aclose returns
```

Why not `concurrent.futures.ThreadPoolExecutor`: the standard library shuts its pools
down as the program ends, before any `atexit` hook runs, and refuses new work from then
on. The sync facade drains its app from an `atexit` hook, so the pool it drains into
must be one that nothing else shuts down. The threads are all started in `start()`:
Python 3.12.0 and 3.12.1 refuse to start a thread once the interpreter is finalizing,
which is when that hook runs (3.10, 3.11 and 3.13 allow it).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import TaskTimeout
from ..registries import Kind
from .base import Call, Executor, run_in_thread, within

# A job, or a stop marker: what a thread calls on its way out.
_Item = tuple[Future[Any], Call, asyncio.AbstractEventLoop] | Callable[[], None]


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
        self._jobs: queue.SimpleQueue[_Item] | None = None
        self._threads: list[threading.Thread] = []

    @property
    def slots(self) -> int:
        return self.max_workers

    @property
    def capacity(self) -> int:
        return self.max_workers - self.active - self.overrun

    async def start(self) -> None:
        if self._jobs is not None:
            return
        jobs: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        # Daemon threads: the interpreter joins every non-daemon thread *before* it runs
        # the atexit hooks, so an idle non-daemon worker would wait forever for the stop
        # marker that the sync facade's at-exit drain (an atexit hook) sends it.
        threads = [
            threading.Thread(target=_work, args=(jobs,), name=f"qtasks_mp-thread-{i}", daemon=True)
            for i in range(self.max_workers)
        ]
        for t in threads:
            t.start()
        self._jobs, self._threads = jobs, threads

    async def run(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        assert self._jobs is not None, "ThreadExecutor.run before start()"
        # A stdlib Future is the handle because it settles, under its own lock, the race
        # between a thread starting the call and the loop cancelling it
        # (`set_running_or_notify_cancel`); `wrap_future` carries a cancel across.
        job: Future[Any] = Future()
        self._jobs.put((job, call, loop))
        fut = asyncio.wrap_future(job, loop=loop)
        timeout = call.spec.timeout
        try:
            if timeout is None or await within(fut, timeout):
                return await fut
        except asyncio.CancelledError:  # the app is stopping; a started thread goes on
            self._left_running(job, fut, loop)
            raise
        self._left_running(job, fut, loop)
        raise TaskTimeout(
            call.task_name,
            timeout,
            "a thread cannot be stopped, so the function keeps running in its thread "
            "(holding one slot) until it returns; use executor='process' for a hard limit",
        )

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
        jobs, threads = self._jobs, self._threads
        if jobs is None:
            return
        self._jobs, self._threads = None, []
        if cancel_pending:
            while not jobs.empty():  # threads may take some meanwhile: each goes one way
                with contextlib.suppress(queue.Empty):
                    item = jobs.get_nowait()
                    if isinstance(item, tuple):
                        item[0].cancel()
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        left = len(threads)

        def one_gone() -> None:
            nonlocal left
            left -= 1
            if left == 0 and not gone.done():
                gone.set_result(None)

        for _ in threads:  # behind the calls still queued: those run first
            jobs.put(lambda: _call_soon(loop, one_gone))
        # Threads that overran their timeout, or were cancelled at shutdown, may run on:
        # do not wait for them (as daemon threads they end with the program at the latest).
        if self.overrun == 0:
            await gone

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "overrun": self.overrun}


def _work(jobs: queue.SimpleQueue[_Item]) -> None:
    """A worker thread: run jobs until a stop marker comes."""
    while True:
        item = jobs.get()
        if not isinstance(item, tuple):
            item()
            return
        job, call, loop = item
        del item
        if job.set_running_or_notify_cancel():  # False: cancelled before it started
            try:
                job.set_result(run_in_thread(call, loop))
            except BaseException as e:  # as concurrent.futures does: the caller gets it
                job.set_exception(e)
        del job, call, loop  # hold no result or traceback while idle


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
        loop.call_soon_threadsafe(fn)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved: the task already failed or was cancelled
