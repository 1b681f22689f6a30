"""How long a cancel takes: from `app.cancel()` to the worker replaced and the pool back.

    python benchmarks/cancel_latency.py [--rounds 20] [--quick]

1. A process task runs (`time.sleep(600)` in one of 2 workers). Times, from the call to
   `app.cancel(task)`:
   - `cancel() returned`: the task has ended `cancel` (its waiters are woken);
   - `worker gone`: the worker process that ran it no longer exists (SIGTERM, then
     SIGKILL after `kill_grace_s` if it ignores SIGTERM; `time.sleep` does not);
   - `pool back to size`: its replacement has started and said it is ready.
2. The same task cancelled from another process on a SQLite store: a second process
   opens the file and calls `store.cancel(uuid)`; the time from its commit to the task's
   end as recorded by the dispatcher here (`finished_at`): how long the request takes to
   reach the dispatcher (the store looks every 0.25 s) and the task to end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil

from qtasks_mp import ProcessExecutor
from qtasks_mp.asyncio import QueueTasks

REQUEST = """
import asyncio, sys, time, uuid
from qtasks_mp.config import QueueConfig
from qtasks_mp.stores.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open(QueueConfig(), lambda: None)
    await store.cancel(uuid.UUID(sys.argv[2]), time.time())
    print(time.time())  # committed: the store replied after COMMIT
    await store.close()

asyncio.run(main())
"""


def gone(proc: psutil.Process) -> bool:
    return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


async def poll(check: Callable[[], bool]) -> None:
    """Until `check()`; every 0.5 ms (a measurement, not a test: we want the moment)."""
    while True:
        if check():
            return
        await asyncio.sleep(0.0005)


def make_app(store: str | None) -> tuple[QueueTasks, ProcessExecutor]:
    pool = ProcessExecutor(2, autoscale=False)
    app = QueueTasks("cancel-bench", store=store, executors={"process": pool})
    app.config.shutdown_timeout = 1.0
    app.task(name="sleep", executor="process")(time.sleep)
    return app, pool


async def running(app: QueueTasks, pool: ProcessExecutor) -> tuple[object, int]:
    """Start one long task; return it and the pid of the worker running it."""
    task = await app.add_task("sleep", 600)
    assert task is not None
    while True:
        busy = [pid for pid, w in pool.stats()["per_worker"].items() if w["held"]]
        got = await app.get(task.uuid)
        if busy and got is not None and got.status == "process":
            return task, busy[0]
        await asyncio.sleep(0.002)


async def local_rounds(rounds: int) -> dict[str, list[float]]:
    app, pool = make_app(None)
    out: dict[str, list[float]] = {"cancel() returned": [], "worker gone": [], "pool back": []}
    async with app:
        assert await pool.wait_ready(60)
        for _ in range(rounds):
            task, pid = await running(app, pool)
            proc = psutil.Process(pid)
            start = time.perf_counter()
            assert await app.cancel(task) is True
            out["cancel() returned"].append(time.perf_counter() - start)
            await poll(partial(gone, proc))
            out["worker gone"].append(time.perf_counter() - start)
            await poll(lambda: pool.stats()["workers"] == 2 and pool.stats()["starting"] == 0)
            out["pool back"].append(time.perf_counter() - start)
    return out


async def remote_rounds(rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "tasks.db")
        app, pool = make_app(db)
        out = []
        async with app:
            assert await pool.wait_ready(60)
            for _ in range(rounds):
                task, _ = await running(app, pool)
                uuid = task.uuid  # type: ignore[attr-defined]
                done = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-c", REQUEST, db, str(uuid)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                requested = float(done.stdout.strip())
                ended = await app.wait(uuid, 30)
                assert ended is not None and ended.status == "cancel"
                record = await app.store.get(uuid)
                assert record is not None
                out.append(record.finished_at - requested)
                await poll(lambda: not pool.stats()["starting"])
        return out


def show(name: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    print(
        f"{name:<44} median {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms   "
        f"max {ms[-1]:8.2f} ms   (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 rounds each")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    local = asyncio.run(local_rounds(rounds))
    print("process task, cancelled in its own app (2 workers):")
    for name, values in local.items():
        show(f"  cancel() -> {name}", values)
    print("process task, cancelled from another process (SQLite store):")
    show("  request committed -> task ended there", asyncio.run(remote_rounds(max(3, rounds // 2))))


if __name__ == "__main__":
    main()
