"""Real processes on one PostgreSQL queue: two consumers and a producer; a consumer
SIGKILLed with 2,000 accepted tasks; the server restarted under load; a producer process
waiting for results that a consumer process records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from pg_support import Cluster, query
from polling import wait_until
from sqlite_support import waited_round_trips

REPO = Path(__file__).resolve().parents[2]
WORKER_APP = REPO / "tests" / "apps" / "pg_worker_app.py"
TABLE = "qtasks_mp_tasks"

PRODUCER = textwrap.dedent(
    """
    import asyncio, os, sys
    from qtasks_mp.asyncio import QueueTasks

    async def main(url, n, pause_s):
        app = QueueTasks("producer", store=url)

        @app.task
        async def record(i: int) -> int: ...   # the name and signature matter here

        accepted = 0
        for start in range(0, n, 50):   # 50 concurrent producers at a time
            tasks = await asyncio.gather(
                *(app.add_task("record", i) for i in range(start, min(n, start + 50)))
            )
            accepted += sum(t is not None and t.status == "new" for t in tasks)
            await asyncio.sleep(pause_s)
        await app.store.close()
        print(accepted)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    """
)


class Consumer:
    """`python -m qtasks_mp run tests/apps/pg_worker_app.py:app`, its log in a file."""

    def __init__(self, url: str, log: Path, runs: Path, **env: str) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115  (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qtasks_mp", "run", f"{WORKER_APP}:app"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "QTASKS_TEST_PG_URL": url,
                "QTASKS_TEST_RUNS": str(runs),
                **env,
            },
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return "running; press Ctrl-C" in self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code: int = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._out.close()
        return code


def _runs(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter(int(line) for line in path.read_text().split())


def _statuses(url: str) -> dict[str, int]:
    try:
        rows = query(url, f"SELECT status, count(*) FROM {TABLE} GROUP BY status")
    except Exception as e:  # the table is made by the first store to open
        if "does not exist" in str(e):
            return {}
        raise
    return {str(s): int(str(n)) for s, n in rows}


def _first_arg(blob: Any) -> int:
    import msgpack

    args, _kwargs = msgpack.unpackb(blob, raw=False)
    return int(args[0])


def _produce(url: str, n: int, pause_s: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, url, str(n), str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _accepted(producer: subprocess.Popen[str], timeout_s: float) -> int:
    out, err = producer.communicate(timeout=timeout_s)
    assert producer.returncode == 0, err[-3000:]
    return int(out.split()[-1])


def _start_two(url: str, tmp_path: Path, **env: str) -> tuple[Consumer, Consumer, Path, Path]:
    runs, log = tmp_path / "runs.txt", tmp_path / "consumers.log"
    a = Consumer(url, tmp_path / "a.log", runs, **env)
    b = Consumer(url, tmp_path / "b.log", runs, **env)
    wait_until(lambda: a.ready() and b.ready(), 20, "two consumers")
    return a, b, runs, log


def test_a_sigkilled_consumer_loses_nothing_and_reruns_only_what_it_held(
    pg_url: str, tmp_path: Path
) -> None:
    n = 2000
    assert _accepted(_produce(pg_url, n), 30) == n  # accepted before any consumer runs
    a, b, runs, _ = _start_two(pg_url, tmp_path, QTASKS_TEST_TASK_S="0.02")
    try:
        wait_until(lambda: sum(_runs(runs).values()) >= 300, 20, "the consumers to get going")

        def held_by_a() -> int:
            leased = query(pg_url, f"SELECT lease_owner FROM {TABLE} WHERE status = 'process'")
            return sum(f"|{a.pid}|" in str(owner) for (owner,) in leased)

        def a_stopped_holding_tasks() -> bool:
            # A consumer leases only what it can start, and may be between batches: stop
            # it, and go on only if it holds tasks then (two, in case a finish it had
            # sent still commits); else let it run a little and look again.
            a.proc.send_signal(signal.SIGSTOP)
            if held_by_a() >= 2:
                return True
            a.proc.send_signal(signal.SIGCONT)
            return False

        wait_until(a_stopped_holding_tasks, 20, "the first consumer to hold tasks")
        b.proc.send_signal(signal.SIGSTOP)  # B must not put A's tasks back before we look
        try:
            assert a.stop(signal.SIGKILL) == -signal.SIGKILL
            # A's statements already sent may still commit: wait until its sessions are gone
            wait_until(
                lambda: (
                    not query(
                        pg_url,
                        "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE $1",
                        f"% pid {a.pid}",
                    )
                ),
                10,
                "the server to end the dead consumer's sessions",
            )
            leased = query(
                pg_url, f"SELECT args, lease_owner FROM {TABLE} WHERE status = 'process'"
            )
            held = {_first_arg(args) for args, owner in leased if f"|{a.pid}|" in str(owner)}
            before = _statuses(pg_url)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        assert held, f"the kill hit no task in flight: {before}"
        assert before.get("success", 0) < n
        wait_until(lambda: _statuses(pg_url).get("success") == n, 30, f"all {n} tasks to succeed")
    finally:
        assert b.stop() == 0, b.log.read_text()[-3000:]
        a.stop(signal.SIGKILL)
    counts = _runs(runs)
    assert set(counts) == set(range(n)), "a task never ran"
    assert max(counts.values()) <= 2
    twice = {i for i, c in counts.items() if c == 2}
    assert twice <= held, f"tasks that were not in flight ran twice: {sorted(twice - held)}"
    retries = {_first_arg(args): r for args, r in query(pg_url, f"SELECT args, retry FROM {TABLE}")}
    # the attempt that died is counted, and only for those A held
    assert {i for i, r in retries.items() if r} == held
    assert set(retries.values()) <= {0, 1}
    assert "put back to run again: its dispatcher died" in b.log.read_text()
    print(f"held by the killed consumer: {len(held)}, started twice: {len(twice)}")


def test_a_server_restart_under_load_loses_no_accepted_task(
    pg_cluster: Cluster, pg_url: str, tmp_path: Path
) -> None:
    n = 1500
    a, b, runs, _ = _start_two(pg_url, tmp_path, QTASKS_TEST_LEASE_S="3")
    try:
        producer = _produce(pg_url, n, pause_s=0.02)
        wait_until(lambda: sum(_runs(runs).values()) >= 300, 20, "the consumers to get going")
        pg_cluster.restart("immediate")  # every connection cut mid-statement; crash recovery
        assert _accepted(producer, 60) == n  # add_task waited for the server: none refused
        wait_until(lambda: _statuses(pg_url).get("success") == n, 40, f"all {n} tasks to succeed")
    finally:
        codes = [a.stop(), b.stop()]
    logs = a.log.read_text() + b.log.read_text()
    assert codes == [0, 0], logs[-3000:]
    assert "lost the server" in logs and "answers again" in logs
    counts = _runs(runs)
    assert set(counts) == set(range(n)), "an accepted task never ran"
    retries = {_first_arg(args): r for args, r in query(pg_url, f"SELECT args, retry FROM {TABLE}")}
    again = {i for i, c in counts.items() if c > 1}
    # at-least-once: a task starts again only when its lease was lost (counted in retry):
    # an outcome committed asynchronously in the crash's last moments may be undone
    assert all(retries[i] >= counts[i] - 1 for i in again), sorted(again)
    print(f"tasks started more than once after the restart: {len(again)}")


def test_producers_wait_for_results_of_two_consumers_that_run_each_task_once(
    pg_url: str, tmp_path: Path
) -> None:
    a, b, runs, _ = _start_two(pg_url, tmp_path)
    try:
        producer = _produce(pg_url, 400)
        latencies = waited_round_trips(pg_url, 20)
        median = latencies[len(latencies) // 2]
        assert median < 0.25, latencies  # NOTIFY wakes the consumer and the waiter
        assert _accepted(producer, 30) == 400
        wait_until(lambda: _statuses(pg_url).get("success") == 420, 20, "all 420 to finish")
    finally:
        codes = [a.stop(), b.stop()]
    assert codes == [0, 0], (a.log.read_text() + b.log.read_text())[-3000:]
    assert _runs(runs) == Counter(range(400))  # SKIP LOCKED: no task taken by both
