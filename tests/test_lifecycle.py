"""Lifecycle: a real SIGINT/SIGTERM to a real run_forever() process; start/stop in-process."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import read_until

from qtasks_mp import AppNotRunning
from qtasks_mp.asyncio import QueueTasks

APP = Path(__file__).parent / "apps" / "shutdown_app.py"


def launch(facade: str, mode: str) -> subprocess.Popen[str]:
    """tests/apps/shutdown_app.py, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, str(APP), facade, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_and_interrupt(facade: str, mode: str, sig: int) -> tuple[int, str, str]:
    proc = launch(facade, mode)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the long task has started
        assert first.strip() == "started", first
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    return proc.returncode, first + out, err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("facade", ["async", "sync", "timer"])
def test_sigint_lets_the_running_task_finish_and_reports_queued(facade: str) -> None:
    code, out, err = run_and_interrupt(facade, "finishes", signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err
    assert "long_job finished" in out and "exited cleanly" in out
    assert "1 running tasks finished, 0 cancelled, 5 queued tasks not run" in err
    assert "queued 0 ran" not in out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("facade", ["async", "sync"])
def test_sigterm_cancels_a_task_that_overruns_shutdown_timeout(facade: str) -> None:
    code, out, err = run_and_interrupt(facade, "overruns", signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err
    assert "0 running tasks finished, 1 cancelled, 5 queued tasks not run" in err
    assert "long_job finished" not in out


@pytest.mark.timeout(40)
@pytest.mark.parametrize("facade", ["async", "sync"])
def test_a_second_sigint_while_stopping_cancels_the_running_task_now(facade: str) -> None:
    """Ctrl-C, then Ctrl-C again while the stop waits for a task that will not end
    (its shutdown_timeout is 60 s): the task is cancelled now and the program ends
    cleanly, though both signals reach a thread other than the main one. Before, the
    sync facade's stop was cut off by a KeyboardInterrupt (a traceback, the stop left
    half done), or, the signal in another thread, waited the 60 s out."""
    proc = launch(facade, "hangs")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == "started"
        to_another_thread(proc.pid, signal.SIGINT)
        read_until(proc.stderr, "SIGINT received: stopping")
        to_another_thread(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "SIGINT again: cancelling the running tasks now" in err
    assert "0 running tasks finished, 1 cancelled, 5 queued tasks not run" in err


@pytest.mark.timeout(40)
@pytest.mark.parametrize("facade", ["async", "sync"])
def test_a_third_sigint_leaves_a_stop_that_hangs(facade: str) -> None:
    """A stop that cannot end (an event handler that never returns): the second
    Ctrl-C cannot cut it short, the third leaves at once, saying so."""
    proc = launch(facade, "stuck")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "stopping handler hangs"
        proc.send_signal(signal.SIGINT)  # (the next once this one is seen: two may merge)
        read_until(proc.stderr, "SIGINT again: cancelling the running tasks now")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert "SIGINT a third time" in err, err


def to_another_thread(pid: int, sig: int) -> None:
    """Send `sig` to a thread of `pid` other than its main one, as the kernel may
    deliver a Ctrl-C: the main thread, blocked in a wait, is not interrupted then, and
    Python runs the handler only when that thread runs again."""
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, "no thread but the main one"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, others[0], sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


async def test_async_with_starts_and_stops_and_can_restart() -> None:
    app = QueueTasks()
    app.task(name="f")(lambda: 1)
    async with app:
        assert app.running
        first = await app.add_task("f", timeout=5)
    assert not app.running
    async with app:
        second = await app.add_task("f", timeout=5)
    assert first is not None and second is not None and second.returning == 1


async def test_stop_marks_running_and_queued_as_cancel_and_wakes_waiters() -> None:
    app = QueueTasks()
    app.config.shutdown_timeout = 0.05
    app.config.max_tasks_process = 1

    @app.task
    async def forever() -> None:
        await asyncio.Event().wait()

    await app.start()
    running = await app.add_task("forever")
    queued = await app.add_task("forever")
    assert running is not None and queued is not None
    waiter = asyncio.create_task(app.wait(queued.uuid, timeout=10))
    await asyncio.sleep(0.01)
    await app.stop()
    woke = await asyncio.wait_for(waiter, 2)
    assert woke is not None and woke.status == "cancel"
    got = await app.get(running.uuid)
    assert (
        got is not None
        and got.status == "cancel"
        and "while the task was running" in (got.traceback or "")
    )


async def test_add_task_while_stopping_is_refused() -> None:
    app = QueueTasks()
    app.config.shutdown_timeout = 1.0
    gate = asyncio.Event()

    @app.task
    async def slow() -> None:
        await gate.wait()

    await app.start()
    await app.add_task("slow")
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(app.stop())
    await asyncio.sleep(0.01)
    with pytest.raises(AppNotRunning, match="stopping"):
        await app.add_task("slow")
    gate.set()
    await stopping


async def test_tasks_dropped_at_stop_are_bounded_by_retention() -> None:
    app = QueueTasks()
    app.config.result_retention_count = 10
    app.config.max_tasks_process = 1
    app.config.shutdown_timeout = 0.01

    @app.task
    async def slow() -> None:
        await asyncio.Event().wait()

    for _ in range(3):
        async with app:
            for _ in range(100):
                await app.add_task("slow")
    assert sum((await app.store.counts()).values()) <= 10
