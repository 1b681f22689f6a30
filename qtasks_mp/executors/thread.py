"""`ThreadExecutor`: runs blocking functions in a bounded thread pool."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import TaskTimeout
from ..registries import Kind
from .base import Call, Executor, run_in_thread, within


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
        self._pool: ThreadPoolExecutor | None = None

    @property
    def slots(self) -> int:
        return self.max_workers

    @property
    def capacity(self) -> int:
        return self.max_workers - self.active - self.overrun

    async def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="qtasks_mp")

    async def run(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        assert self._pool is not None, "ThreadExecutor.run before start()"
        job = self._pool.submit(run_in_thread, call, loop)
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
            job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._thread_returned))

    def _thread_returned(self) -> None:
        self.overrun -= 1
        self.wakeup()

    async def aclose(self, cancel_pending: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Threads that overran their timeout or were cancelled at shutdown may still run:
            # do not wait for them (the interpreter joins them when the program exits).
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: pool.shutdown(wait=self.overrun == 0, cancel_futures=True)
            )

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "overrun": self.overrun}


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks it retrieved: the task already failed or was cancelled
