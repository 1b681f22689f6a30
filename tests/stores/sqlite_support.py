"""Helpers of the SQLite store tests: conditions with deadlines, reading the file directly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"
WORKER_APP = APPS / "sqlite_worker_app.py"


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Read the store's file with a connection of our own (as another program would)."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def statuses(db: Path) -> dict[str, int]:
    """Tasks by status; none while the file exists but the store has not made its table yet."""
    try:
        return dict(query(db, "SELECT status, count(*) FROM tasks GROUP BY status"))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise


def first_arg(blob: bytes) -> Any:
    """The first positional argument of a stored call (plain msgpack for ints)."""
    args, _kwargs = msgpack.unpackb(blob, raw=False)
    return args[0]


def start_worker(db: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    """`python -m qtasks_mp run tests/apps/sqlite_worker_app.py:app --store db`."""
    out = open(log, "ab")  # noqa: SIM115  (closed by stop_worker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtasks_mp", "run", f"{WORKER_APP}:app", "--store", str(db), *extra],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    proc.log_file = out  # type: ignore[attr-defined]
    return proc


def stop_worker(proc: Any, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code: int = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.log_file.close()
    return code


def waited_round_trips(store: str, n: int) -> list[float]:
    """Run tests/apps/waiting_producer.py against `store` (a worker runs elsewhere): each
    of its `n` waited `add_task("double", i)` must come back `2 * i`, "success". Returns
    the round trips (s), sorted, and prints their median and max."""
    done = subprocess.run(
        [sys.executable, str(APPS / "waiting_producer.py"), store, str(n)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert [(r, s) for r, s, _ in results] == [(2 * i, "success") for i in range(n)]
    latencies = sorted(t for _, _, t in results)
    median, worst = latencies[n // 2], latencies[-1]
    print(f"producer round trip: median {median * 1e3:.1f} ms, max {worst * 1e3:.1f}")
    return latencies
