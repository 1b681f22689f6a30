"""`ThreadExecutor`: runs blocking functions in a bounded thread pool."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import TaskTimeout
from ..registries import Kind
from .base import Call, Executor, run_in_thread


class ThreadExecutor(Executor):
    """`max_workers` threads. A timeout fails the task but cannot stop the thread.

    Python cannot interrupt a running thread, so a timed-out call keeps its thread
    (and its slot: `capacity` counts it) until the function returns by itself.
    """

    name = "thread"
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
        fut = loop.run_in_executor(self._pool, run_in_thread, call, loop)
        timeout = call.spec.timeout
        try:
            if timeout is None:
                return await asyncio.shield(fut)
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.CancelledError:  # the app is stopping; the thread cannot be
            self._left_running(fut)
            raise
        except asyncio.TimeoutError:
            self._left_running(fut)
            assert timeout is not None
            raise TaskTimeout(
                call.task_name,
                timeout,
                "a thread cannot be stopped, so the function keeps running in its thread "
                "(holding one slot) until it returns; use executor='process' for a hard limit",
            ) from None

    def _left_running(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            self.overrun += 1
            fut.add_done_callback(self._thread_returned)

    def _thread_returned(self, fut: asyncio.Future[Any]) -> None:
        self.overrun -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: the task already failed with TaskTimeout
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
