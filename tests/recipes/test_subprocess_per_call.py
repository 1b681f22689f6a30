"""executors/subprocess_per_call.py: a memory cap, a hard timeout that kills the
process group, crashes as WorkerCrashed, and nothing shared between calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import recipe_funcs as rf
from recipe_loader import load_recipe

from qtasks_mp.asyncio import QueueTasks

SubprocessExecutor = load_recipe("subprocess_per_call").SubprocessExecutor


@pytest.fixture
async def app() -> AsyncIterator[QueueTasks]:
    executor = SubprocessExecutor(2, memory_limit_bytes=256 << 20)
    application = QueueTasks("sandbox", executors={"sandbox": executor})
    for fn in (rf.hoard, rf.calls_so_far, rf.exit_with, rf.spawn_and_return, rf.print_and_return):
        application.task(executor="sandbox")(fn)
    application.task(name="spawn_then_block", executor="sandbox", timeout=0.5)(rf.spawn_then_block)
    async with application:
        yield application


def gone(*pids: int, timeout_s: float = 5.0) -> bool:
    """Whether every pid has exited (or is a zombie nobody reaped yet) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not all(_dead(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _dead(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_the_memory_cap_fails_the_task_with_a_clear_message(app: QueueTasks) -> None:
    done = await app.add_task("hoard", 512, timeout=20)
    assert done is not None and done.status == "error"
    assert done.traceback is not None
    assert "MemoryError: task 'hoard' ran out of memory in its subprocess" in done.traceback
    assert "capped at 256 MiB" in done.traceback and "memory_limit_bytes" in done.traceback
    assert "block = bytearray(mib << 20)" in done.traceback  # the child's own frame
    small = await app.add_task("hoard", 16, timeout=20)  # under the cap: fine
    assert small is not None and small.returning == 16 << 20


async def test_the_timeout_kills_the_subprocess_and_its_children(
    app: QueueTasks, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    done = await app.add_task("spawn_then_block", str(pids_file), timeout=20)
    assert done is not None and done.status == "error"
    assert done.traceback is not None and "TaskTimeout" in done.traceback
    assert "were killed" in done.traceback
    child, grandchild = map(int, pids_file.read_text().split())
    assert gone(child, grandchild)


async def test_leftover_processes_are_killed_after_a_call(app: QueueTasks) -> None:
    done = await app.add_task("spawn_and_return", timeout=20)
    assert done is not None and done.status == "success"
    assert gone(done.returning)


async def test_a_crash_names_the_exit_code(app: QueueTasks) -> None:
    done = await app.add_task("exit_with", 3, timeout=20)
    assert done is not None and done.status == "error"
    assert done.traceback is not None
    assert "WorkerCrashed: the worker running task 'exit_with' died: exited with code 3" in (
        done.traceback
    )


async def test_every_call_gets_a_fresh_process(app: QueueTasks) -> None:
    first = await app.add_task("calls_so_far", timeout=20)
    second = await app.add_task("calls_so_far", timeout=20)
    assert first is not None and second is not None
    assert (first.returning, second.returning) == (1, 1)
    assert app.executors["sandbox"].stats()["spawned"] == 2


async def test_prints_do_not_break_the_result(app: QueueTasks) -> None:
    done = await app.add_task("print_and_return", "clean", timeout=20)
    assert done is not None and done.returning == "clean"


async def test_stopping_the_app_kills_a_running_call(tmp_path: Path) -> None:
    app = QueueTasks("sandbox-stop", executors={"sandbox": SubprocessExecutor(1)})
    app.config.shutdown_timeout = 0.1
    app.task(executor="sandbox")(rf.spawn_then_block)
    pids_file = tmp_path / "pids"
    async with app:
        await app.add_task("spawn_then_block", str(pids_file))
        deadline = time.monotonic() + 10
        while not pids_file.exists() or not pids_file.read_text():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    child, grandchild = map(int, pids_file.read_text().split())
    assert gone(child, grandchild)
