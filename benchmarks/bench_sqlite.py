"""The durable store's speed, side by side in one run.

    python benchmarks/bench_sqlite.py [--quick] [--rounds 3]

1. durable add_task rate: concurrent producers (coroutines of one process, and two
   processes) adding to a SQLiteStore; add_task returns only after the commit.
2. end-to-end durable no-op throughput (add N tasks, run them, all results stored):
   SQLiteStore vs our MemoryStore vs Huey's SqliteHuey (if huey is installed: its
   consumer runs in a process of its own, already started, as a user would run it).

Medians of `--rounds` runs after a warm-up; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores.sqlite import SQLiteStore

PRODUCERS = 64  # concurrent add_task calls in flight per process


def _app(store: object) -> QueueTasks:
    app = QueueTasks("bench", store=store)  # type: ignore[arg-type]
    app.config.logs_default_level = 30
    app.config.result_retention_count = 10**9

    @app.task
    async def noop() -> bool:
        return True

    return app


async def _produce(app: QueueTasks, n: int) -> None:
    per = n // PRODUCERS

    async def producer() -> None:
        for _ in range(per):
            await app.add_task("noop")

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))


async def add_rate(db: Path, n: int, synchronous: str = "NORMAL") -> float:
    """add_task/s into a SQLite file by PRODUCERS coroutines of a producer-only app."""
    start, end, count = await _add_window(db, n, synchronous)
    return count / (end - start)


async def _add_window(db: Path, n: int, synchronous: str = "NORMAL") -> tuple[float, float, int]:
    app = _app(SQLiteStore(db, synchronous=synchronous))
    await app.add_task("noop")  # open the store outside the timing
    start = time.time()
    await _produce(app, n)
    end = time.time()
    await app.store.close()
    return start, end, (n // PRODUCERS) * PRODUCERS


def _add_process(db: str, n: int, out: multiprocessing.Queue[tuple[float, float, int]]) -> None:
    out.put(asyncio.run(_add_window(Path(db), n)))


def add_rate_processes(db: Path, n: int, procs: int = 2) -> float:
    """add_task/s of `procs` producer processes on one file: all their tasks over the
    wall time from the first one's start to the last one's end."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[float, float, int]] = ctx.Queue()
    workers = [ctx.Process(target=_add_process, args=(str(db), n, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    windows = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join()
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    return sum(w[2] for w in windows) / (end - start)


async def end_to_end(store: object, n: int) -> float:
    """Tasks/s from the first add_task to the last result stored, one app (producer and
    dispatcher in one process)."""
    app = _app(store)
    async with app:
        await app.add_task("noop", timeout=5)  # warm: store open, executors started
        start = time.perf_counter()
        await _produce(app, n)
        assert await app.wait_idle(300)
        elapsed = time.perf_counter() - start
    return (n // PRODUCERS) * PRODUCERS / elapsed


HUEY_APP = textwrap.dedent(
    """
    import os
    from huey import SqliteHuey
    huey = SqliteHuey(filename=os.environ["BENCH_HUEY_DB"])

    @huey.task()
    def noop():
        return True
    """
)


def huey_end_to_end(workdir: Path, n: int) -> float | None:
    """Tasks/s of SqliteHuey: enqueue n no-ops while its consumer (2 threads, minimal
    polling delay) runs in its own process; stop when n results are stored."""
    try:
        import huey  # noqa: F401
    except ImportError:
        return None
    db = workdir / f"huey-{time.monotonic_ns()}.db"
    (workdir / "hueyapp.py").write_text(HUEY_APP)
    env = {**os.environ, "BENCH_HUEY_DB": str(db), "PYTHONPATH": str(workdir)}
    os.environ["BENCH_HUEY_DB"] = str(db)
    sys.path.insert(0, str(workdir))
    import importlib

    mod = importlib.reload(importlib.import_module("hueyapp"))
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "hueyapp.huey", "-w", "2", "-k",
         "thread", "-d", "0.001", "-m", "0.01", "-q"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        warm = mod.noop()
        warm.get(blocking=True, timeout=30)
        start = time.perf_counter()
        for _ in range(n):
            mod.noop()
        while mod.huey.result_count() < n:
            time.sleep(0.002)
        return n / (time.perf_counter() - start)
    finally:
        consumer.terminate()
        consumer.wait(10)


def median_of(rounds: int, run: Callable[[], float]) -> float:
    run()  # warm-up
    return statistics.median(run() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    n = 4_000 if opts.quick else 20_000
    n_huey = 1_000 if opts.quick else 3_000
    rounds = 1 if opts.quick else opts.rounds
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def fresh() -> Path:
            return work / f"q-{time.monotonic_ns()}.db"

        add_normal = median_of(rounds, lambda: asyncio.run(add_rate(fresh(), n)))
        rows.append(("durable add_task, 64 producers, NORMAL", add_normal, "target >= 20,000/s"))
        add_full = median_of(rounds, lambda: asyncio.run(add_rate(fresh(), n, "FULL")))
        rows.append(("durable add_task, 64 producers, FULL", add_full, "fsync per commit"))
        two = median_of(rounds, lambda: add_rate_processes(fresh(), n))
        rows.append(("durable add_task, 2 processes x 64", two, "all tasks / wall time"))

        sqlite_e2e = median_of(rounds, lambda: asyncio.run(end_to_end(SQLiteStore(fresh()), n)))
        memory_e2e = median_of(rounds, lambda: asyncio.run(end_to_end(None, n)))
        huey_runs = [huey_end_to_end(work, n_huey) for _ in range(rounds)]
        huey_e2e = statistics.median(h for h in huey_runs if h) if all(huey_runs) else None
        rows.append(("end-to-end no-op, SQLiteStore", sqlite_e2e, "durable"))
        rows.append(
            (
                "end-to-end no-op, MemoryStore",
                memory_e2e,
                f"SQLite = {sqlite_e2e / memory_e2e:.2f}x",
            )
        )
        if huey_e2e is not None:
            rows.append(
                (
                    "end-to-end no-op, Huey SqliteHuey",
                    huey_e2e,
                    f"SQLite = {sqlite_e2e / huey_e2e:.1f}x Huey (target >= 5x)",
                )
            )
        else:
            rows.append(("end-to-end no-op, Huey SqliteHuey", float("nan"), "huey not installed"))
    width = max(len(r[0]) for r in rows)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, n={n} (huey n={n_huey})")
    for name, rate, note in rows:
        print(f"{name.ljust(width)}  {rate:>10,.0f}/s  {note}")


if __name__ == "__main__":
    main()
