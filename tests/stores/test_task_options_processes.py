"""Unique keys and rate limits across real processes: two producers racing on one key
(SQLite, PostgreSQL); two worker processes sharing a rate limit (SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pg_support import Cluster
from pg_support import query as pg_query
from polling import wait_until
from sqlite_support import APPS, query, start_worker, statuses, stop_worker

RACE_APP = APPS / "unique_race_app.py"


def race(url: str) -> list[list[str]]:
    start_at = time.time() + 1.5  # both connected by then: they add at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, str(RACE_APP), url, str(start_at), "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_two_processes_racing_on_a_key_add_one_task_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    got = race(f"sqlite:///{db}")
    assert got[0] == got[1] and len(got[0]) == 1  # both were handed the one task
    rows = query(db, "SELECT uuid, unique_key FROM tasks")
    assert len(rows) == 1 and rows[0][1] == "order-42"


def test_two_processes_racing_on_a_key_add_one_task_postgres(
    pg_cluster: Cluster, pg_url: str
) -> None:
    got = race(pg_url)
    assert got[0] == got[1] and len(got[0]) == 1
    rows = pg_query(pg_url, "SELECT uuid::text, unique_key FROM qtasks_mp_tasks")
    assert rows == [(got[0][0], "order-42")]


def test_a_rate_limit_holds_across_two_worker_processes(tmp_path: Path) -> None:
    """Two `qtasks-mp run` processes on one file, a task limited to 10/s: together they
    start them 0.1 s apart (each alone would allow 10/s, 20/s together)."""
    db, runs = tmp_path / "tasks.db", tmp_path / "runs"
    env = {"QTASKS_TEST_RUNS": str(runs)}
    workers = [start_worker(db, tmp_path / f"w{i}.log", env=env) for i in range(2)]
    try:
        n = 12
        producer = subprocess.run(
            [sys.executable, "-c", ADD_PACED, str(db), str(n)], capture_output=True, text=True
        )
        assert producer.returncode == 0, producer.stderr

        def started() -> list[str]:  # the file appears with the first start
            found = runs.read_text().splitlines() if runs.exists() else []
            return found if len(found) >= n else []

        lines = wait_until(
            started,
            60,
            f"{n} paced tasks to start",
        )
    finally:
        for w in workers:
            stop_worker(w)
    starts = sorted(float(line.split()[1]) for line in lines)
    assert len(starts) == n
    # The store spaces the takes by 0.1 s; a start lags its take by a little, never by
    # minus anything, so only the first start's lag (bounded below) can shorten the span.
    assert starts[-1] - starts[0] >= (n - 1) * 0.1 - 0.05, starts
    assert statuses(db) == {"success": n}


ADD_PACED = """
import sys
from qtasks_mp import QueueTasks
app = QueueTasks("producer", store=sys.argv[1])
@app.task(name="paced", rate_limit="10/s")
async def paced(i): ...
for i in range(int(sys.argv[2])):
    app.add_task("paced", i)
"""
