"""The process executor against the stdlib pool, loky and multiprocessing.Pool, in one run.

    python benchmarks/bench_process.py [--quick] [--workers 2]

Every contender gets the same number of workers, a warm-up, then:
- no-op rate: N calls submitted at once, until the last result is back;
- round trip p50: calls one after another, each awaited before the next;
- CPU efficiency: 40 tasks of ~50 ms of pure-Python work;
  efficiency = serial time / (workers x makespan), 1.0 is perfect;
- array throughput: 16 tasks each taking a distinct 32 MiB numpy array (and summing
  it), submitted at once: MiB/s until the last result is back (needs numpy);
- loop lag (qtasks_mp only, needs numpy): the worst overshoot of a coroutine that
  sleeps 1 ms in a loop while a 256 MiB array goes through `run` as the argument, then
  as the result; beside it the same probe while a worker makes 256 MiB and returns
  nothing large (what the machine's own load costs the loop).
qtasks_mp is measured through the full app (`add_task` -> result) and, as "qtasks_mp
run()", through `executor.run` directly (no store, no dispatcher, no middleware).
The machine may be shared: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpu_work import calibrate, spin, timed  # next to this file

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import Call
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.registries import TaskSpec, kind_of
from qtasks_mp.task import TaskRecord, new_key

# The probe of the loop-lag test (tests/executors/lag_probe.py), one copy for both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "executors"))
from lag_probe import worst_lag_s


def noop() -> None:
    return None


def total(array: Any) -> float:
    return float(array.sum())


Result = tuple[float, float, float, float]
# (no-op rate /s, round-trip p50 s, CPU efficiency, array throughput MiB/s or nan)


@dataclass
class Sizes:
    """What each contender runs (the same for all)."""

    workers: int = 2
    n: int = 20_000  # no-op calls
    trips: int = 500  # sequential round trips
    cpu_tasks: int = 40
    spin_n: int = 0  # `spin` iterations of one CPU task
    serial: float = 0.0  # seconds the CPU tasks take one after another here
    arrays: list[Any] = field(default_factory=list)  # distinct numpy arrays, or none

    @property
    def mib(self) -> float:
        return sum(a.nbytes for a in self.arrays) / 2**20

    def efficiency(self, makespan: float) -> float:
        return self.serial / (self.workers * makespan)

    def throughput(self, seconds: float) -> float:
        return self.mib / seconds if self.arrays else float("nan")

    @classmethod
    def make(cls, workers: int, quick: bool) -> Sizes:
        n, trips, cpu_tasks, cpu_s, count, mib = (
            (2_000, 100, 8, 0.02, 8, 8) if quick else (20_000, 500, 40, 0.05, 16, 32)
        )
        spin_n = calibrate(cpu_s)
        serial = cpu_tasks * statistics.median(timed(spin, spin_n) for _ in range(3))
        try:
            import numpy as np
        except ImportError:
            print("(numpy not installed: no array throughput)")
            arrays = []
        else:
            rng = np.random.default_rng(0)
            arrays = [rng.random((mib << 20) // 8) for _ in range(count)]
        return cls(workers, n, trips, cpu_tasks, spin_n, serial, arrays)


# ---------------------------------------------------------------- qtasks_mp


async def qtasks_app(s: Sizes) -> Result:
    app = QueueTasks(
        "bench", executors={"process": ProcessExecutor(max_workers=s.workers, autoscale=False)}
    )
    app.config.logs_default_level = 30
    for fn in (noop, spin, total):
        app.task(executor="process")(fn)
    async with app:
        for _ in range(200):  # warm-up: functions shipped, code paths hot
            await app.add_task("noop")
        for a in s.arrays[: 2 * s.workers]:  # and numpy imported in every worker
            await app.add_task("total", a[:1024])
        await app.wait_idle()
        start = time.perf_counter()
        for _ in range(s.n):
            await app.add_task("noop")
        await app.wait_idle()
        rate = s.n / (time.perf_counter() - start)
        lat = []
        for _ in range(s.trips):
            t0 = time.perf_counter()
            await app.add_task("noop", timeout=10)
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for _ in range(s.cpu_tasks):
            await app.add_task("spin", s.spin_n)
        await app.wait_idle()
        makespan = time.perf_counter() - start
        start = time.perf_counter()
        tasks = [await app.add_task("total", a) for a in s.arrays]
        await app.wait_idle()
        moved = time.perf_counter() - start
        for task in tasks:
            assert task is not None and (await app.get(task.uuid)).status == "success"  # type: ignore[union-attr]
    return rate, statistics.median(lat), s.efficiency(makespan), s.throughput(moved)


def _call(spec: TaskSpec, *args: Any) -> Call:
    return Call(spec, TaskRecord(new_key(), spec.name, "process", 0, args, {}, 0.0), None)


async def qtasks_run(s: Sizes) -> Result:
    executor = ProcessExecutor(max_workers=s.workers, autoscale=False)
    specs = {
        f.__name__: TaskSpec(f.__name__, f, kind_of(f), "process") for f in (noop, spin, total)
    }

    async def run_all(name: str, args: list[tuple[Any, ...]]) -> list[Any]:
        return await asyncio.gather(*(executor.run(_call(specs[name], *a)) for a in args))

    await executor.start()
    try:
        await run_all("noop", [()] * 200)
        await run_all("total", [(a[:1024],) for a in s.arrays[: 2 * s.workers]])
        start = time.perf_counter()
        await run_all("noop", [()] * s.n)
        rate = s.n / (time.perf_counter() - start)
        lat = []
        for _ in range(s.trips):
            t0 = time.perf_counter()
            await executor.run(_call(specs["noop"]))
            lat.append(time.perf_counter() - t0)
        start = time.perf_counter()
        await run_all("spin", [(s.spin_n,)] * s.cpu_tasks)
        makespan = time.perf_counter() - start
        start = time.perf_counter()
        await run_all("total", [(a,) for a in s.arrays])
        moved = time.perf_counter() - start
    finally:
        await executor.aclose()
    return rate, statistics.median(lat), s.efficiency(makespan), s.throughput(moved)


# ---------------------------------------------------------------- the others


def futures_pool(make: Callable[[], Any], s: Sizes) -> Result:
    """Any `concurrent.futures.Executor`: submit per call."""
    pool = make()
    try:
        return _submit_per_call(lambda fn, *a: pool.submit(fn, *a).result, s)
    finally:
        pool.shutdown()


def mp_pool(s: Sizes) -> Result:
    with multiprocessing.Pool(s.workers) as pool:
        return _submit_per_call(lambda fn, *a: pool.apply_async(fn, a).get, s)


Submit = Callable[..., Callable[[], Any]]  # submit(fn, *args) -> wait for its result


def _submit_per_call(submit: Submit, s: Sizes) -> Result:
    """The measurements of a pool whose API is submit one call, then wait for it."""

    def run_all(fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> None:
        for wait in [submit(fn, *a) for a in args]:
            wait()

    run_all(noop, [()] * 200)
    run_all(total, [(a[:1024],) for a in s.arrays[: 2 * s.workers]])
    start = time.perf_counter()
    run_all(noop, [()] * s.n)
    rate = s.n / (time.perf_counter() - start)
    lat = []
    for _ in range(s.trips):
        t0 = time.perf_counter()
        submit(noop)()
        lat.append(time.perf_counter() - t0)
    makespan = timed(run_all, spin, [(s.spin_n,)] * s.cpu_tasks)
    moved = timed(run_all, total, [(a,) for a in s.arrays])
    return rate, statistics.median(lat), s.efficiency(makespan), s.throughput(moved)


def map_rates(s: Sizes, chunksize: int = 64) -> tuple[float, float]:
    """Items/s of `app.map(chunksize=)` and of `ProcessPoolExecutor.map(chunksize=)`,
    over `s.n` no-op items (`noop_item` takes one argument)."""

    async def app_map() -> float:
        app = QueueTasks(
            "bench", executors={"process": ProcessExecutor(max_workers=s.workers, autoscale=False)}
        )
        app.config.logs_default_level = 30
        app.task(executor="process")(noop_item)
        async with app:
            await app.map("noop_item", range(4 * chunksize), chunksize=chunksize)  # warm-up
            start = time.perf_counter()
            await app.map("noop_item", range(s.n), chunksize=chunksize)
            return s.n / (time.perf_counter() - start)

    rate = asyncio.run(app_map())
    with concurrent.futures.ProcessPoolExecutor(s.workers) as pool:
        list(pool.map(noop_item, range(4 * chunksize), chunksize=chunksize))
        start = time.perf_counter()
        list(pool.map(noop_item, range(s.n), chunksize=chunksize))
        base = s.n / (time.perf_counter() - start)
    return rate, base


def noop_item(x: int) -> int:
    return x


def ones(n: int) -> Any:
    import numpy as np

    return np.ones(n, dtype=np.uint8)


def touch(n: int) -> int:
    import numpy as np

    return int(np.ones(n, dtype=np.uint8)[:: 1 << 12].sum())


async def loop_lag(mib: int = 256, runs: int = 5) -> dict[str, float]:
    """Median over `runs` of the worst loop lag (s) with a `mib` MiB argument, result,
    and the floor (a worker making as much, returning nothing large)."""
    import numpy as np

    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    size = mib << 20
    array = np.ones(size, dtype=np.uint8)
    kept: list[Any] = []  # a result is dropped after the probe: freeing it is the caller's

    async def argument() -> None:
        await executor.run(_call(_spec(total), array))

    async def result() -> None:
        kept.append(await executor.run(_call(_spec(ones), size)))

    async def floor() -> None:
        await executor.run(_call(_spec(touch), size))

    out: dict[str, list[float]] = {"argument": [], "result": [], "floor": []}
    try:
        await argument()  # warm-up: numpy imported in the worker
        for _ in range(runs):
            for name, work in (("floor", floor), ("argument", argument), ("result", result)):
                out[name].append(await worst_lag_s(work))
                kept.clear()
    finally:
        await executor.aclose()
    return {name: statistics.median(lags) for name, lags in out.items()}


@functools.cache
def _spec(fn: Callable[..., Any]) -> TaskSpec:
    return TaskSpec(name=fn.__name__, fn=fn, kind=kind_of(fn), executor="process")


def run_all(s: Sizes) -> dict[str, Result]:
    """Every contender, one after the other; loky only if it is installed."""
    w = s.workers
    contenders: dict[str, Callable[[], Result]] = {
        "qtasks_mp app": lambda: asyncio.run(qtasks_app(s)),
        "qtasks_mp run()": lambda: asyncio.run(qtasks_run(s)),
        "ProcessPoolExecutor": lambda: futures_pool(
            lambda: concurrent.futures.ProcessPoolExecutor(w), s
        ),
        "multiprocessing.Pool": lambda: mp_pool(s),
    }
    try:
        import loky
    except ImportError:
        print("(loky not installed: skipped)")
    else:
        contenders["loky"] = lambda: futures_pool(
            lambda: loky.get_reusable_executor(max_workers=w), s
        )
    return {name: run() for name, run in contenders.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller calls (a smoke run)")
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args()
    s = Sizes.make(opts.workers, opts.quick)
    results = run_all(s)
    base = results["ProcessPoolExecutor"]
    print(
        f"\n{s.workers} workers, {s.n:,} no-op calls, {s.trips} round trips, "
        f"{s.cpu_tasks} x {s.serial / s.cpu_tasks * 1e3:.0f} ms CPU, "
        f"{len(s.arrays)} arrays of {s.mib / max(1, len(s.arrays)):.0f} MiB"
    )
    head = ("no-op rate", "x stdlib", "p50 trip", "/ stdlib", "CPU eff", "arrays", "x stdlib")
    print(
        f"{'':22} {head[0]:>12} {head[1]:>9} {head[2]:>10} {head[3]:>9} {head[4]:>8} "
        f"{head[5]:>12} {head[6]:>9}"
    )
    for name, (rate, p50, eff, mib_s) in results.items():
        print(
            f"{name:22} {rate:>10,.0f}/s {rate / base[0]:>8.2f}x {p50 * 1e6:>8.0f}µs "
            f"{p50 / base[1]:>8.2f}x {eff:>8.3f} {mib_s:>7,.0f}MiB/s {mib_s / base[3]:>8.2f}x"
        )
    if s.arrays:  # numpy is installed
        lag = asyncio.run(loop_lag(64 if opts.quick else 256))
        print(
            f"\nloop lag, worst per call, median of 5 ({64 if opts.quick else 256} MiB array): "
            f"argument {lag['argument'] * 1e3:.1f} ms, result {lag['result'] * 1e3:.1f} ms "
            f"(floor: a worker making as much, {lag['floor'] * 1e3:.1f} ms)"
        )


if __name__ == "__main__":
    main()
