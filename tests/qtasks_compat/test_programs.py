"""QTasks' examples that are one program (or a test suite), run as QTasks runs them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from compat_support import Proc, copy_port, python, run

pytestmark = pytest.mark.timeout(120)


def test_tests_md_unittest_and_pytest_blocks(ported: dict[str, Path], tmp_path: Path) -> None:
    """tests.md blocks 2, 4 (unittest, async app) and 5 (pytest): every test passes."""
    where = ported["tests_md"] = copy_port("tests_md", tmp_path)
    out = run([sys.executable, "-m", "unittest", "test_block2", "test_block4", "-v"], where)
    assert out.returncode == 0 and "Ran 2 tests" in out.stderr, out.stderr
    out = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_block5.py"], where
    )
    assert out.returncode == 0 and "4 passed" in out.stdout, out.stdout + out.stderr


def test_tests_md_sync_blocks(ported: dict[str, Path], tmp_path: Path) -> None:
    """tests.md blocks 1 and 3 (unittest, sync app): both pass."""
    where = ported["tests_md_sync"] = copy_port("tests_md_sync", tmp_path)
    out = run([sys.executable, "-m", "unittest", "test_block1", "test_block3", "-v"], where)
    assert out.returncode == 0 and "Ran 2 tests" in out.stderr, out.stderr


@pytest.mark.parametrize("script", ["test_async_timer.py", "test_sync_timer.py"])
def test_timers(ported: dict[str, Path], tmp_path: Path, script: str) -> None:
    """examples/timers: `timer.add_task(5, task_name="test", trigger=CronTrigger(
    second="*/5"))`, then `timer.run_forever()`: "Number: 5" every 5 seconds."""
    where = ported[script] = copy_port("timers", tmp_path)
    proc = Proc([sys.executable, script], where)
    try:
        proc.wait_for("Number: 5", timeout=30)
    finally:
        proc.stop()


def test_concurrent_async_enqueue(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/concurrent (async): 20,000 add_task calls gathered, then the timing line."""
    where = ported["concurrent"] = copy_port("concurrent", tmp_path)
    out = python("test_async_concurrent_tasks.py", where, timeout=100)
    assert "Completed 20000 tasks in" in out


def test_cli_stats_inspect_tasks(ported: dict[str, Path], tmp_path: Path) -> None:
    """QTasks' `qtasks -A app:app stats inspect tasks`: the registered tasks."""
    where = ported["gs-inspect"] = copy_port("getting_started", tmp_path)
    out = run(
        [sys.executable, "-m", "qtasks_mp", "-A", "app:app", "stats", "inspect", "tasks"], where
    )
    assert out.returncode == 0, out.stderr
    assert "Name: mytest" in out.stdout and "Name: error_zero" in out.stdout
