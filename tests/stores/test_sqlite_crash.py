"""Real processes on one SQLite file: a worker SIGKILLed with 1,000 accepted tasks, a
producer process waiting for a worker process's result, several concurrent writers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from polling import wait_until
from sqlite_support import (
    REPO,
    first_arg,
    query,
    start_worker,
    statuses,
    stop_worker,
    waited_round_trips,
)

from qtasks_mp.asyncio import QueueTasks

N = 1000


async def _accept(db: Path, n: int) -> None:
    """Add `record(0..n-1)` as a producer that runs no dispatcher (a web app would)."""
    producer = QueueTasks("producer", store=db)

    @producer.task
    async def record(i: int) -> int:  # only the name, signature and kind matter here
        raise NotImplementedError

    tasks = await asyncio.gather(*(producer.add_task("record", i) for i in range(n)))
    assert all(t is not None and t.status == "new" for t in tasks)
    await producer.store.close()


def _runs(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter(int(line) for line in path.read_text().split())


def test_sigkilled_worker_loses_nothing_and_reruns_only_what_was_running(tmp_path: Path) -> None:
    db, runs, log = tmp_path / "tasks.db", tmp_path / "runs.txt", tmp_path / "worker.log"
    asyncio.run(_accept(db, N))
    env = {"QTASKS_TEST_RUNS": str(runs)}

    held: set[int] = set()
    for _ in range(5):  # a kill between two batches hits nothing in flight: kill another
        first = start_worker(db, log, env=env)
        wait_until(lambda: sum(_runs(runs).values()) >= 150, 15, "the first worker to get going")
        wait_until(lambda: statuses(db).get("process"), 15, "a task in flight")
        assert stop_worker(first, signal.SIGKILL) == -signal.SIGKILL
        # What the dead worker held: taken (leased), maybe running, not recorded as finished.
        held = {first_arg(a) for (a,) in query(db, "SELECT args FROM tasks WHERE status='process'")}
        if held:
            break
    before = statuses(db)
    assert held, f"the kill hit no task in flight: {before}"
    assert before.get("success", 0) < N

    second = start_worker(db, log, env=env)
    wait_until(lambda: statuses(db).get("success") == N, 20, f"all {N} tasks to succeed")
    assert stop_worker(second) == 0, log.read_text()[-3000:]

    counts = _runs(runs)
    assert set(counts) == set(range(N)), "a task never ran"
    twice = {i for i, c in counts.items() if c == 2}
    assert max(counts.values()) <= 2
    assert twice <= held, f"tasks that were not in flight ran twice: {sorted(twice - held)}"
    retries = dict(
        (first_arg(a), r) for a, r in query(db, "SELECT args, retry FROM tasks")
    )  # the attempt that died is counted, and only for those
    assert {i for i, r in retries.items() if r} == held
    assert set(retries.values()) <= {0, 1}
    assert "put back to run again" in log.read_text()


def test_a_producer_process_gets_results_from_a_worker_process(tmp_path: Path) -> None:
    db, log = tmp_path / "tasks.db", tmp_path / "worker.log"
    worker = start_worker(db, log)
    try:
        wait_until(lambda: "running; press Ctrl-C" in log.read_text(), 15, "the worker")
        latencies = waited_round_trips(str(db), 20)
        median = latencies[len(latencies) // 2]
        assert median < 0.25, latencies  # the target is ~50 ms; no polling fallback exists
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from qtasks_mp.asyncio import QueueTasks

    async def main():
        app = QueueTasks("writer", store=sys.argv[1])

        @app.task
        async def double(x: int) -> int: ...

        for _ in range(6):   # bursts of concurrent adds
            await asyncio.gather(*(app.add_task("double", i) for i in range(100)))
        await app.store.close()

    asyncio.run(main())
    """
)


def test_concurrent_writer_processes_get_no_database_is_locked(tmp_path: Path) -> None:
    db, log = tmp_path / "tasks.db", tmp_path / "worker.log"
    worker = start_worker(db, log)  # writes too: takes and finishes while they add
    try:
        wait_until(lambda: "running; press Ctrl-C" in log.read_text(), 15, "the worker")
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(db)],
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            for _ in range(4)
        ]
        errors = [w.communicate(timeout=30)[1] for w in writers]
        assert [w.returncode for w in writers] == [0] * 4, errors
        assert not any("locked" in e for e in errors), errors
        wait_until(lambda: statuses(db).get("success") == 2400, 15, "all 2,400 to finish")
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-3000:]
    assert "locked" not in log.read_text()


def test_two_workers_share_one_file_and_run_each_task_once(tmp_path: Path) -> None:
    db, runs, log = tmp_path / "tasks.db", tmp_path / "runs.txt", tmp_path / "worker.log"
    env = {"QTASKS_TEST_RUNS": str(runs)}
    workers = [start_worker(db, log, env=env) for _ in range(2)]
    try:
        wait_until(lambda: log.read_text().count("running; press") == 2, 15, "two workers")
        asyncio.run(_accept(db, 400))
        wait_until(lambda: statuses(db).get("success") == 400, 15, "all 400 to finish")
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0, 0], log.read_text()[-3000:]
    assert _runs(runs) == Counter(range(400))  # leases: no task taken by both
    os.remove(runs)
