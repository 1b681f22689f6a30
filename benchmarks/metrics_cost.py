"""What metrics cost per task: the no-op rate with the built-in Timing vs TaskMetrics.

    python benchmarks/metrics_cost.py [--quick]

Two apps in one loop, one with `middlewares=[TaskMetrics()]`; their runs alternate
(A, B, A, B, ...) after a warm-up, and the medians are compared. TaskMetrics takes the
built-in Timing's place (one layer either way): the difference is two histogram
observations per attempt, and, for the thread lane, that a waiting add_task no longer
runs its call eagerly (only built-in middleware may; see docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.metrics import TaskMetrics, metrics


async def noop() -> None:
    return None


def tnoop() -> None:
    return None


def make(with_metrics: bool) -> QueueTasks:
    app = QueueTasks(
        "m" if with_metrics else "plain", middlewares=[TaskMetrics()] if with_metrics else None
    )
    app.task(name="noop")(noop)
    app.task(name="tnoop")(tnoop)
    return app


async def burst(app: QueueTasks, name: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await app.add_task(name)
    await app.wait_idle()
    return n / (time.perf_counter() - start)


async def round_trips(app: QueueTasks, name: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await app.add_task(name, timeout=5)
    return n / (time.perf_counter() - start)


async def compare(
    plain: QueueTasks,
    measured: QueueTasks,
    run: Callable[[QueueTasks], Awaitable[float]],
    rounds: int,
) -> tuple[float, float]:
    await run(plain)
    await run(measured)
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        for app, out in ((plain, a), (measured, b)):
            gc.collect()
            out.append(await run(app))
    return statistics.median(a), statistics.median(b)


async def main(quick: bool) -> None:
    n, rounds = (5_000, 3) if quick else (30_000, 7)
    plain, measured = make(False), make(True)
    async with plain, measured:
        cases = {
            "async no-op, burst": lambda app: burst(app, "noop", n),
            "sync no-op (thread), burst": lambda app: burst(app, "tnoop", n),
            "async no-op, waited one by one": lambda app: round_trips(app, "noop", n // 5),
            "sync no-op (thread), waited one by one": lambda app: round_trips(app, "tnoop", n // 5),
        }
        print(f"{'case':42s} {'Timing':>12s} {'TaskMetrics':>12s} {'ratio':>7s}")
        for label, run in cases.items():
            a, b = await compare(plain, measured, run, rounds)
            print(f"{label:42s} {a:10,.0f}/s {b:10,.0f}/s {b / a:6.2f}x")
        metrics(measured)  # the first one imports prometheus_client
        start = time.perf_counter()
        body = metrics(measured)
        took = time.perf_counter() - start
        print(f"one scrape: {took * 1e3:.2f} ms, {len(body)} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
