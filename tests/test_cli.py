"""`qtasks-mp` (run as `python -m qtasks_mp`): run, stats, tasks, purge, and the one-line
errors for bad input."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from polling import wait_until
from stores.sqlite_support import APPS, REPO, statuses

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.cli import main
from qtasks_mp.context import AsyncTask


def cli(*args: str, cwd: Path = REPO, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qtasks_mp", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("qtasks-mp: error:"), lines
    for text in expected:
        assert text in lines[0], lines[0]


def test_help_reads_well() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for word in ("run", "stats", "tasks", "purge", "examples:", "QTASKS_MP_STORE"):
        assert word in done.stdout
    for command in ("run", "stats", "tasks", "purge"):
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "--store" in sub.stdout, sub.stdout
    assert "if __name__" in cli("run", "--help").stdout


# ------------------------------------------------------------------ bad input


def test_missing_module(tmp_path: Path) -> None:
    one_line_error(
        cli("run", "no_such_module:app", cwd=tmp_path), "no module named 'no_such_module'"
    )
    one_line_error(cli("run", "missing/main.py:app", cwd=tmp_path), "no such file")


def test_no_app_in_the_module_names_the_apps_it_has() -> None:
    one_line_error(
        cli("run", f"{APPS / 'sqlite_worker_app.py'}:application"),
        "has no attribute 'application'",
        "apps in it: app",
    )
    one_line_error(cli("run", f"{APPS / 'sqlite_worker_app.py'}:record"), "not a QueueTasks app")


def test_a_module_that_raises_shows_its_traceback_then_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("x = 1\nraise RuntimeError('db url missing')\n")
    done = cli("run", "broken:app", cwd=tmp_path)
    assert done.returncode == 2
    assert "broken.py" in done.stderr and "line 2" in done.stderr  # where their bug is
    assert done.stderr.strip().splitlines()[-1] == (
        "qtasks-mp: error: importing 'broken' failed: RuntimeError: db url missing"
    )


def test_store_that_cannot_be_opened(tmp_path: Path) -> None:
    one_line_error(cli("stats", "--store", str(tmp_path / "nope.db")), "no task store at")
    one_line_error(
        cli("stats", "--store", "memory://"), "neither a SQLite file nor a PostgreSQL URL"
    )
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"\x00garbage" * 1000)
    for command in ("stats", "tasks", "purge"):
        one_line_error(cli(command, "--store", str(bad)), "corrupt.db", "not a usable SQLite")
    one_line_error(
        cli("run", f"{APPS / 'sqlite_worker_app.py'}:app", "--store", str(bad)),
        "not a usable SQLite",
    )
    one_line_error(
        cli("run", f"{APPS / 'sqlite_worker_app.py'}:app", "--store", str(tmp_path / "x" / "t.db")),
        "cannot create the task store",
    )


def test_a_locked_store(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    asyncio.run(_fill(db))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a sqlite3 shell left inside a transaction
    try:
        one_line_error(
            cli("purge", "--store", str(db), "--busy-timeout", "0.2"), "locked by another program"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cli("purge", "--store", str(db)).returncode == 0


# ------------------------------------------------------------------ stats, tasks, purge


async def _fill(db: Path) -> None:
    app = QueueTasks(store=db)

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.task
    async def later() -> None: ...

    @app.task(echo=True)
    async def pages(self: AsyncTask) -> None:
        self.progress(30, total=120, note="page 3")

    async with app:
        for i in range(5):
            await app.add_task("double", i, timeout=5)
        await app.add_task("fail", "card declined", timeout=5)
        await app.add_task("pages", timeout=5)
    app2 = QueueTasks(store=db)  # queued, no worker: stays "new"

    @app2.task
    async def later() -> None: ...  # noqa: F811

    await app2.add_task("later")
    await app2.store.close()


def test_stats_tasks_and_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    asyncio.run(_fill(db))
    assert main(["stats", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "(8 tasks)" in lines[0]
    assert any(line.split() == ["success", "6"] for line in lines)
    row = {line.split()[0]: line.split() for line in lines if line.split()}
    assert row["double"][1:6] == ["0", "0", "5", "0", "0"]  # queued running ok failed cancel
    assert row["fail"][1:6] == ["0", "0", "0", "1", "0"]
    assert row["later"][1:3] == ["1", "0"]
    assert "run p50" in out

    assert main(["tasks", "--store", str(db), "--status", "error"]) == 0
    out = capsys.readouterr().out
    assert "fail  error" in out and "ValueError: card declined" in out and "Traceback" in out
    assert "double" not in out
    assert main(["tasks", "--store", str(db), "--task", "pages"]) == 0
    assert "pages  success  retries=0  progress 30/120 (25%) page 3" in capsys.readouterr().out

    assert main(["purge", "--store", str(db), "--older-than", "1h"]) == 0
    assert "deleted 0 tasks" in capsys.readouterr().out
    assert main(["purge", "--store", str(db)]) == 0
    assert "deleted 7 tasks (cancel, error, success)" in capsys.readouterr().out
    assert statuses(db) == {"new": 1}


# ------------------------------------------------------------------ run


def test_run_with_timers_from_an_unguarded_module(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qtasks_mp",
            "run",
            "sqlite_timer_app:app",
            "--store",
            str(db),
            "--max-tasks-process",
            "3",
            "--thread-workers",
            "2",
        ],
        cwd=APPS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: db.exists() and statuses(db).get("success", 0) >= 3, 15, "3 ticks")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out
    assert "module imported past run_forever()" in out
    assert "run_forever() at import skipped" in out
    assert "inline(3), thread(2)" in out  # the options reached the config
    assert "SIGTERM received: stopping" in out and "Traceback" not in out


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`qtasks-mp tasks ... | head -1`: the reader stops reading; the command ends
    with no BrokenPipeError traceback (here the reader is gone before any write)."""
    db = tmp_path / "t.db"
    asyncio.run(_fill(db))
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qtasks_mp", "tasks", "--store", str(db)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            cwd=REPO,
        )
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
