"""The process executor against the stdlib pool, loky and multiprocessing.Pool, in one run.

    python benchmarks/bench_process.py [--quick] [--workers 2]

Every contender gets the same number of workers, a warm-up, then:
- no-op rate: N calls submitted at once, until the last result is back;
- round trip p50: calls one after another, each awaited before the next;
- CPU efficiency: 40 tasks of ~50 ms of pure-Python work;
  efficiency = serial time / (workers x makespan), 1.0 is perfect.
qtasks_mp is measured through the full app (`add_task` -> result) and, as "qtasks_mp
run()", through `executor.run` directly (no store, no dispatcher, no middleware).
The machine may be shared: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import Call
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.registries import TaskSpec, kind_of
from qtasks_mp.task import TaskRecord, new_uuid


def noop() -> None:
    return None


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


def calibrate(seconds: float) -> int:
    """How many `spin` iterations take about `seconds` here."""
    n = 100_000
    while True:
        start = time.perf_counter()
        spin(n)
        took = time.perf_counter() - start
        if took > 0.02:
            return int(n * seconds / took)
        n *= 2


Result = tuple[float, float, float]  # (no-op rate /s, round-trip p50 s, CPU efficiency)


# ---------------------------------------------------------------- qtasks_mp


async def qtasks_app(workers: int, n: int, trips: int, spin_n: int, serial: float) -> Result:
    app = QueueTasks("bench", executors={"process": ProcessExecutor(max_workers=workers)})
    app.config.logs_default_level = 30
    app.task(executor="process")(noop)
    app.task(executor="process")(spin)
    async with app:
        for _ in range(200):  # warm-up: functions shipped, code paths hot
            await app.add_task("noop")
        await app.wait_idle()
        start = time.perf_counter()
        for _ in range(n):
            await app.add_task("noop")
        await app.wait_idle()
        rate = n / (time.perf_counter() - start)
        lat = []
        for _ in range(trips):
            t0 = time.perf_counter()
            await app.add_task("noop", timeout=10)
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for _ in range(40):
            await app.add_task("spin", spin_n)
        await app.wait_idle()
        makespan = time.perf_counter() - start
    return rate, statistics.median(lat), serial / (workers * makespan)


def _call(spec: TaskSpec, *args: Any) -> Call:
    return Call(spec, TaskRecord(new_uuid(), spec.name, "process", 0, args, {}, 0.0), None)


async def qtasks_run(workers: int, n: int, trips: int, spin_n: int, serial: float) -> Result:
    executor = ProcessExecutor(max_workers=workers)
    specs = {fn.__name__: TaskSpec(fn.__name__, fn, kind_of(fn), "process") for fn in (noop, spin)}
    await executor.start()
    try:
        await asyncio.gather(*(executor.run(_call(specs["noop"])) for _ in range(200)))
        start = time.perf_counter()
        await asyncio.gather(*(executor.run(_call(specs["noop"])) for _ in range(n)))
        rate = n / (time.perf_counter() - start)
        lat = []
        for _ in range(trips):
            t0 = time.perf_counter()
            await executor.run(_call(specs["noop"]))
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        await asyncio.gather(*(executor.run(_call(specs["spin"], spin_n)) for _ in range(40)))
        makespan = time.perf_counter() - start
    finally:
        await executor.aclose()
    return rate, statistics.median(lat), serial / (workers * makespan)


# ---------------------------------------------------------------- the others


def futures_pool(
    make: Callable[[], Any], workers: int, n: int, trips: int, spin_n: int, serial: float
) -> Result:
    """Any `concurrent.futures.Executor`: submit per call."""
    pool = make()
    try:
        concurrent.futures.wait([pool.submit(noop) for _ in range(200)])
        start = time.perf_counter()
        concurrent.futures.wait([pool.submit(noop) for _ in range(n)])
        rate = n / (time.perf_counter() - start)
        lat = []
        for _ in range(trips):
            t0 = time.perf_counter()
            pool.submit(noop).result()
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        concurrent.futures.wait([pool.submit(spin, spin_n) for _ in range(40)])
        makespan = time.perf_counter() - start
    finally:
        pool.shutdown()
    return rate, statistics.median(lat), serial / (workers * makespan)


def mp_pool(workers: int, n: int, trips: int, spin_n: int, serial: float) -> Result:
    with multiprocessing.Pool(workers) as pool:
        for r in [pool.apply_async(noop) for _ in range(200)]:
            r.get()
        start = time.perf_counter()
        for r in [pool.apply_async(noop) for _ in range(n)]:
            r.get()
        rate = n / (time.perf_counter() - start)
        lat = []
        for _ in range(trips):
            t0 = time.perf_counter()
            pool.apply_async(noop).get()
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for r in [pool.apply_async(spin, (spin_n,)) for _ in range(40)]:
            r.get()
        makespan = time.perf_counter() - start
    return rate, statistics.median(lat), serial / (workers * makespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args()
    w = opts.workers
    n, trips = (2_000, 100) if opts.quick else (20_000, 500)
    spin_n = calibrate(0.05)
    one = statistics.median(_timed(spin, spin_n) for _ in range(3))
    serial = 40 * one
    args = (w, n, trips, spin_n, serial)
    contenders: dict[str, Callable[[], Result]] = {
        "qtasks_mp app": lambda: asyncio.run(qtasks_app(*args)),
        "qtasks_mp run()": lambda: asyncio.run(qtasks_run(*args)),
        "ProcessPoolExecutor": lambda: futures_pool(
            lambda: concurrent.futures.ProcessPoolExecutor(w), *args
        ),
        "multiprocessing.Pool": lambda: mp_pool(*args),
    }
    try:
        import loky

        contenders["loky"] = lambda: futures_pool(
            lambda: loky.get_reusable_executor(max_workers=w), *args
        )
    except ImportError:
        print("(loky not installed: skipped)")
    results = {name: run() for name, run in contenders.items()}
    base = results["ProcessPoolExecutor"]
    print(f"\n{w} workers, {n:,} no-op calls, {trips} round trips, 40 x {one * 1e3:.0f} ms CPU")
    head = ("no-op rate", "x stdlib", "p50 trip", "/ stdlib", "CPU eff")
    print(f"{'':22} {head[0]:>12} {head[1]:>9} {head[2]:>10} {head[3]:>9} {head[4]:>8}")
    for name, (rate, p50, eff) in results.items():
        print(
            f"{name:22} {rate:>10,.0f}/s {rate / base[0]:>8.2f}x {p50 * 1e6:>8.0f}µs "
            f"{p50 / base[1]:>8.2f}x {eff:>8.3f}"
        )


def _timed(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
