"""Unique tasks under two real producer processes racing on one key (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pg_support import Cluster
from pg_support import query as pg_query
from sqlite_support import APPS, query

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
