"""DaskExecutor against raw `client.submit`, and against the process executor, in one run.

    python benchmarks/bench_dask.py [--quick] [--workers 2]

One LocalCluster (`--workers` processes, one thread each) serves every Dask contender.

- Per-call overhead: calls one after another, each awaited before the next; p50 of
  `await executor.run(call)` (DaskExecutor alone: no store, dispatcher or middleware)
  against `await client.submit(fn, i, pure=False)` on an asynchronous client of the
  same cluster. Rounds alternate A, B, A, B after a warm-up; the ratio of the medians
  is reported (target: at most 1.2). The full app (`add_task(..., timeout=)`) is shown
  for information.
- Batch: N no-op calls submitted at once, until the last is back (rates, for information):
  each future awaited on its own (as `run` does), and raw with one bulk `client.gather`.
- CPU makespan: 40 tasks of ~50 ms of pure-Python work through the app, on DaskExecutor
  and on `ProcessExecutor(max_workers=--workers)`; efficiency = serial time /
  (workers x makespan), 1.0 is perfect.

The machine may be shared: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dask
from cpu_work import calibrate, spin, timed  # next to this file
from distributed import Client, LocalCluster

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import Call
from qtasks_mp.executors.dask import DaskExecutor
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.registries import TaskSpec, kind_of
from qtasks_mp.task import TaskRecord, new_key


def noop(i: int) -> int:
    return i


def make_call(spec: TaskSpec, *args: Any) -> Call:
    record = TaskRecord(new_key(), spec.name, spec.name, 0, args, {}, time.time())
    return Call(spec, record, None)


async def p50(one: Callable[[int], Awaitable[Any]], n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        await one(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def overhead(address: str, trips: int, rounds: int, batch: int) -> dict[str, float]:
    client: Any = await Client(address, asynchronous=True)  # type: ignore[no-untyped-call]
    executor = DaskExecutor(address)
    await executor.start()
    app = QueueTasks("bench-dask", executors={"dask": executor})
    app.task(name="noop", executor="dask")(noop)
    spec = TaskSpec(name="noop", fn=noop, kind=kind_of(noop), executor="dask")
    try:

        async def raw(i: int) -> Any:
            return await client.submit(noop, i, pure=False)

        async def run(i: int) -> Any:
            return await executor.run(make_call(spec, i))

        async def via_app(i: int) -> Any:
            return await app.add_task("noop", i, timeout=30)

        await p50(raw, 20)  # warm-up: connections, the function's first pickling
        await p50(run, 20)
        raw_p50, run_p50 = [], []
        for _ in range(rounds):
            raw_p50.append(await p50(raw, trips))
            run_p50.append(await p50(run, trips))
        start = time.perf_counter()
        await client.gather([client.submit(noop, i, pure=False) for i in range(batch)])
        bulk_rate = batch / (time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.gather(*(raw(i) for i in range(batch)))
        raw_rate = batch / (time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(batch)))
        run_rate = batch / (time.perf_counter() - start)
        async with app:  # uses the started executor, and closes it at the end
            app_p50 = await p50(via_app, trips)
    finally:
        await executor.aclose()
        await client.close()
    return {
        "raw": statistics.median(raw_p50),
        "run": statistics.median(run_p50),
        "app": app_p50,
        "bulk_rate": bulk_rate,
        "raw_rate": raw_rate,
        "run_rate": run_rate,
    }


async def makespan(executor: Any, tasks: int, spin_n: int) -> float:
    app = QueueTasks("bench-cpu", executors={"pool": executor})
    app.config.logs_default_level = 30
    app.task(name="spin", executor="pool")(spin)
    async with app:
        await app.add_task("spin", 1000, timeout=30)  # warm-up
        start = time.perf_counter()
        for _ in range(tasks):
            await app.add_task("spin", spin_n)
        assert await app.wait_idle(timeout=600)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller calls (a smoke run)")
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args()
    w = opts.workers
    trips, rounds, batch, tasks, cpu_s = (
        (30, 3, 100, 8, 0.02) if opts.quick else (200, 5, 1000, 40, 0.05)
    )
    spin_n = calibrate(cpu_s)
    serial = tasks * statistics.median(timed(spin, spin_n) for _ in range(3))

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    try:
        o = asyncio.run(overhead(cluster.scheduler_address, trips, rounds, batch))
        dask_s = asyncio.run(makespan(DaskExecutor(cluster.scheduler_address), tasks, spin_n))
    finally:
        cluster.close()
    process_s = asyncio.run(
        makespan(ProcessExecutor(max_workers=w, autoscale=False), tasks, spin_n)
    )

    ratio = o["run"] / o["raw"]
    verdict = "PASS" if ratio <= 1.2 else "MISS"
    print(f"\n{w} Dask workers x 1 thread; {trips} trips x {rounds} rounds; batch of {batch}")
    rows = [
        ("per-call p50", "time", "/ raw", ""),
        ("raw client.submit", f"{o['raw'] * 1e3:.2f}ms", "1.00x", ""),
        ("DaskExecutor.run", f"{o['run'] * 1e3:.2f}ms", f"{ratio:.2f}x", f"<= 1.2x {verdict}"),
        (
            "app add_task -> result",
            f"{o['app'] * 1e3:.2f}ms",
            f"{o['app'] / o['raw']:.2f}x",
            "info",
        ),
        ("batch rate", "/s", "x raw", ""),
        ("raw submit, each awaited", f"{o['raw_rate']:,.0f}/s", "1.00x", ""),
        ("DaskExecutor.run, each awaited", f"{o['run_rate']:,.0f}/s", _x(o, "run_rate"), "info"),
        ("raw submit + one client.gather", f"{o['bulk_rate']:,.0f}/s", _x(o, "bulk_rate"), "info"),
    ]
    for name, value, rel, note in rows:
        print(f"{name:34} {value:>10} {rel:>8}  {note}")
    per_task_ms = serial / tasks * 1e3
    print(f"\n{tasks} CPU tasks x {per_task_ms:.0f} ms on {w} workers (serial {serial:.2f} s)")
    print(f"{'':34} {'makespan':>10} {'efficiency':>11}")
    for name, took in (("DaskExecutor (app)", dask_s), ("ProcessExecutor (app)", process_s)):
        print(f"{name:34} {took:>9.2f}s {serial / (w * took):>11.3f}")


def _x(o: dict[str, float], key: str) -> str:
    return f"{o[key] / o['raw_rate']:.2f}x"


if __name__ == "__main__":
    main()
