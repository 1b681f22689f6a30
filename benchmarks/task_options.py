"""What the task options of issue 13 hold and cost: the rate a `rate_limit` keeps, and
the cost of `self.progress(...)` per call.

    python benchmarks/task_options.py [--quick]

- rate: `@app.task(rate_limit="50/s")`, 1,000 calls queued before the start, run for 10 s
  (2 s with --quick) on the memory store and on a SQLite file; the starts recorded in
  the task: calls started, the rate between the first and the last start, and the
  most starts seen in any 1-second window (the limit says at most 50).
- progress: a loop of N `self.progress(i, total=N)` calls against the same loop
  without it, timed inside the task, in an inline coroutine, a thread and a process
  worker; ns per call. A process worker sends at most 10 messages a second.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from pathlib import Path
from typing import Any

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.context import AsyncTask


async def rate(store: Any, seconds: float) -> tuple[int, float, int]:
    app = QueueTasks("rate", store=store)
    starts: list[float] = []

    @app.task(rate_limit="50/s")
    async def paced(i: int) -> None:
        starts.append(time.monotonic())

    for i in range(1000):  # queued before the start: the adding does not compete
        await app.add_task("paced", i)
    async with app:
        await asyncio.sleep(seconds)
        n = len(starts)
        window = max(
            bisect.bisect_left(starts, s + 1.0) - k
            for k, s in enumerate(starts)
            if s + 1.0 <= starts[-1]
        )
    app.config.shutdown_timeout = 0.1
    held = (n - 1) / (starts[n - 1] - starts[0])
    return n, held, window


def loop_plain(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        _ = (i, n, None)
    return time.perf_counter() - start


def loop_progress(self: Any, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        self.progress(i, total=n)
    return time.perf_counter() - start


def in_thread(self: Any, n: int) -> list[float]:
    return [loop_plain(n), loop_progress(self, n)]


def in_process(self: Any, n: int) -> list[float]:
    return [loop_plain(n), loop_progress(self, n)]


async def progress_cost(n: int) -> dict[str, float]:
    app = QueueTasks("progress")

    @app.task(echo=True)
    async def inline(self: AsyncTask, n: int) -> list[float]:
        return [loop_plain(n), loop_progress(self, n)]

    app.task(echo=True)(in_thread)
    app.task(echo=True, executor="process")(in_process)
    out = {}
    async with app:
        for name in ("inline", "in_thread", "in_process"):
            best = None
            for _ in range(3):
                task = await app.add_task(name, n, timeout=120)
                assert task is not None and task.status == "success", task
                plain, with_progress = task.returning
                cost = (with_progress - plain) / n * 1e9
                best = cost if best is None else min(best, cost)
            assert best is not None
            out[name] = best
    return out


async def main(quick: bool) -> None:
    seconds = 2.0 if quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, store in (("memory", None), ("sqlite", f"sqlite:///{Path(tmp) / 't.db'}")):
            n, held, window = await rate(store, seconds)
            print(
                f"rate_limit='50/s' over {seconds:g}s, {label} store: {n} started, "
                f"{held:.2f}/s between the first and the last start, "
                f"at most {window} in any 1 s window"
            )
    for name, ns in (await progress_cost(200_000 if quick else 1_000_000)).items():
        print(f"self.progress per call, {name}: {ns:.0f} ns")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
