"""The loop-lag probe of tests/executors/test_process_loop_lag.py, also run by
benchmarks/bench_process.py (`loop_lag`): how late the event loop wakes a coroutine
that sleeps 1 ms in a loop, at worst, while some work runs in that loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def worst_lag_s(work: Callable[[], Awaitable[Any]]) -> float:
    """The longest the loop was late waking a 1 ms sleeper while `work` ran."""
    stop, started = asyncio.Event(), asyncio.Event()

    async def probe() -> float:
        worst = 0.0
        while not stop.is_set():
            started.set()
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)
        return worst

    task = asyncio.ensure_future(probe())
    await started.wait()
    try:
        await work()
    finally:
        stop.set()
    return await task
