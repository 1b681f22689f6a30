"""ProcessExecutor when things die: the crash table, timeouts, orphans, random SIGKILLs.

Every crash here is real (os._exit, a segfault through ctypes, SIGKILL). The module
has its own pool; after each row of the crash table a normal call must still succeed
on it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import procfuncs
import psutil
import pytest
import pytest_asyncio
from proc_support import assert_roster_counts, fifo, gone, make_call, read_fifo

from qtasks_mp import SerializationError, TaskFailed, TaskStatus, TaskTimeout, WorkerCrashed
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.wire import RemoteTraceback

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    await executor.start()
    yield executor
    pids = executor.stats()["pids"]
    await executor.aclose(cancel_pending=True)  # a failed test may leave calls blocked
    assert gone(pids)


SIGKILL, SIGSEGV = -signal.SIGKILL, -signal.SIGSEGV

# where x how -> expected: an exception type, plus the exit code for WorkerCrashed.
# "external SIGKILL" in the worker-side rows is the worker killing itself with
# SIGKILL (as the OOM killer would); the `call` row has a truly external one below.
CRASH_TABLE: list[tuple[str, str, type[BaseException], int | None]] = [
    ("pickle args", "raise", SerializationError, None),
    ("pickle args", "exit", SerializationError, None),
    ("unpickle args", "raise", SerializationError, None),
    ("unpickle args", "exit", SerializationError, None),
    ("unpickle args", "os_exit", WorkerCrashed, 3),
    ("unpickle args", "segfault", WorkerCrashed, SIGSEGV),
    ("unpickle args", "sigkill", WorkerCrashed, SIGKILL),
    ("call", "raise", RuntimeError, None),
    ("call", "exit", TaskFailed, None),
    ("call", "os_exit", WorkerCrashed, 3),
    ("call", "segfault", WorkerCrashed, SIGSEGV),
    ("call", "sigkill", WorkerCrashed, SIGKILL),
    ("pickle result", "raise", SerializationError, None),
    ("pickle result", "exit", SerializationError, None),
    ("pickle result", "os_exit", WorkerCrashed, 3),
    ("pickle result", "segfault", WorkerCrashed, SIGSEGV),
    ("pickle result", "sigkill", WorkerCrashed, SIGKILL),
    ("unpickle result", "raise", SerializationError, None),
    ("unpickle result", "exit", SerializationError, None),
]


def crash_call(where: str, how: str) -> Any:
    if where == "pickle args":
        return make_call(procfuncs.take, procfuncs.OnPickle(how))
    if where == "unpickle args":
        return make_call(procfuncs.take, procfuncs.OnUnpickle(how))
    if where == "call":
        return make_call(procfuncs.crash, how)
    if where == "pickle result":
        return make_call(procfuncs.return_on_pickle, how)
    return make_call(procfuncs.return_on_unpickle, how)


@pytest.mark.parametrize(("where", "how", "expected", "code"), CRASH_TABLE)
async def test_crash_table(
    pool: ProcessExecutor, where: str, how: str, expected: type[BaseException], code: int | None
) -> None:
    crashes = pool.crashes
    call = crash_call(where, how)
    with pytest.raises(expected) as info:
        await asyncio.wait_for(pool.run(call), 10)
    error = info.value
    if expected is WorkerCrashed:
        assert isinstance(error, WorkerCrashed) and error.exitcode == code
        assert error.task_name == call.task_name
        if code is not None and code < 0:
            assert signal.Signals(-code).name in str(error)
        assert pool.crashes == crashes + 1
    else:
        assert call.task_name in str(error) or expected is RuntimeError
        if where in ("unpickle args", "call", "pickle result"):  # the worker's traceback
            assert isinstance(error.__cause__, RemoteTraceback)
            assert "in do" in error.__cause__.text
        else:  # raised here: chained to the original error
            assert isinstance(error.__cause__, RuntimeError | SystemExit)
    # the pool healed: a normal call succeeds, and it is back to full strength
    assert await asyncio.wait_for(pool.run(make_call(procfuncs.add, 1, 2)), 10) == 3
    assert pool.stats()["workers"] == 2
    assert_roster_counts(pool)
    assert await pool.wait_ready(10)


async def test_external_sigkill_fails_only_the_running_call(
    pool: ProcessExecutor, tmp_path: Path
) -> None:
    # Worker A runs a call that blocks, and holds a second call it has not started.
    path = fifo(tmp_path)
    running = asyncio.ensure_future(pool.run(make_call(procfuncs.report_pid_and_block, path)))
    pid = int(await read_fifo(path))
    others = [asyncio.ensure_future(pool.run(make_call(procfuncs.add, i, 1))) for i in range(6)]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed, match="SIGKILL") as info:
        await asyncio.wait_for(running, 10)
    assert info.value.signal == signal.SIGKILL
    assert await asyncio.wait_for(asyncio.gather(*others), 10) == [1, 2, 3, 4, 5, 6]
    assert gone([pid])


async def test_received_but_unstarted_call_moves_to_another_worker(
    pool: ProcessExecutor, tmp_path: Path
) -> None:
    # Fill both workers with blocking calls, then pipeline one call behind each.
    assert await pool.wait_ready(10)
    paths = [fifo(tmp_path, f"f{i}") for i in range(2)]
    blockers = [
        asyncio.ensure_future(pool.run(make_call(procfuncs.report_pid_and_block, p))) for p in paths
    ]
    pids = [int(await read_fifo(p)) for p in paths]
    queued = [asyncio.ensure_future(pool.run(make_call(procfuncs.pid))) for _ in range(2)]
    await asyncio.sleep(0)  # run() hands them to the workers
    assert pool.stats()["queued"] == 2  # held by the workers, not started
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for blocker in blockers:
        with pytest.raises(WorkerCrashed):
            await asyncio.wait_for(blocker, 10)
    ran_on = await asyncio.wait_for(asyncio.gather(*queued), 10)
    assert not set(ran_on) & set(pids)  # they ran on the replacements


async def test_timeout_kills_only_the_overrunning_worker(pool: ProcessExecutor) -> None:
    assert await pool.wait_ready(10)
    timeouts = pool.timeouts
    before = set(pool.stats()["pids"])
    slow = asyncio.ensure_future(pool.run(make_call(procfuncs.block_forever, timeout=0.2)))
    quick = [asyncio.ensure_future(pool.run(make_call(procfuncs.cpu, 5))) for _ in range(10)]
    with pytest.raises(TaskTimeout) as info:
        await asyncio.wait_for(slow, 10)
    assert isinstance(info.value, TimeoutError)
    assert "killed and replaced" in str(info.value)
    assert all(n > 0 for n in await asyncio.wait_for(asyncio.gather(*quick), 10))
    (killed,) = before - set(pool.stats()["pids"])
    assert gone([killed])
    assert pool.stats()["workers"] == 2  # its replacement is ready or starting
    assert_roster_counts(pool)
    assert pool.timeouts == timeouts + 1


async def test_timeout_clock_starts_when_the_call_starts(pool: ProcessExecutor) -> None:
    # Both workers busy for ~150 ms; calls pipelined behind them have a 100 ms limit
    # that would expire while they wait, if the clock started when they were sent.
    assert await pool.wait_ready(10)
    busy = [asyncio.ensure_future(pool.run(make_call(procfuncs.cpu, 150))) for _ in range(2)]
    queued = [
        asyncio.ensure_future(pool.run(make_call(procfuncs.add, i, 0, timeout=0.1)))
        for i in range(2)
    ]
    assert await asyncio.wait_for(asyncio.gather(*busy, *queued), 10)
    assert [q.result() for q in queued] == [0, 1]


async def test_cancelling_a_running_call_kills_its_worker(
    pool: ProcessExecutor, tmp_path: Path
) -> None:
    path = fifo(tmp_path)
    running = asyncio.ensure_future(pool.run(make_call(procfuncs.report_pid_and_block, path)))
    pid = int(await read_fifo(path))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert gone([pid])
    assert await asyncio.wait_for(pool.run(make_call(procfuncs.add, 1, 2)), 10) == 3


async def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    here = os.path.dirname(procfuncs.__file__)
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            sys.path.insert(0, {here!r})
            import procfuncs
            from proc_support import make_call
            from qtasks_mp.executors.process import ProcessExecutor

            async def main():
                executor = ProcessExecutor(max_workers=2, autoscale=False)
                await executor.start()
                busy = asyncio.ensure_future(executor.run(make_call(procfuncs.block_forever)))
                await asyncio.sleep(0)
                print(*executor.stats()["pids"], flush=True)
                await busy

            asyncio.run(main())
            """
        )
    )
    parent = subprocess.Popen(  # noqa: ASYNC220  (a plain child, not awaited on)
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait(10)
        assert gone(pids)  # one of them was running a call that never returns
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


async def test_retries_survive_random_sigkills() -> None:
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    app = QueueTasks("kills", executors={"process": executor})
    app.config.shutdown_timeout = 2.0
    app.task(executor="process", retry=2)(procfuncs.cpu)
    kills = 0
    killed: set[int] = set()  # a killed worker looks "ready" until its exit is handled
    async with app:
        tasks = [await app.add_task("cpu", 2) for _ in range(200)]
        rng = random.Random(3)
        for _ in range(8):
            await asyncio.sleep(0.03)  # pacing only: correctness never depends on it
            busy = [
                pid
                for pid, w in executor.stats()["per_worker"].items()
                if w["state"] == "ready" and w["held"] and pid not in killed
            ]
            if busy:
                pid = rng.choice(busy)
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it exited on its own (recycled) just now
                    continue
                kills += 1
        assert await app.wait_idle(30)
        results = [await app.get(t.uuid) for t in tasks if t is not None]
        assert [r.status for r in results if r is not None] == [TaskStatus.SUCCESS] * 200
        assert kills > 0 and executor.crashes == kills
        assert executor.stats()["workers"] == 2
        assert_roster_counts(executor)
        assert (await app.add_task("cpu", 1, timeout=10)).status == "success"  # type: ignore[union-attr]


async def test_closing_waits_for_a_worker_started_after_the_pool_was_empty() -> None:
    # As after a timeout: the killed worker is gone before its replacement connects, so
    # the pool is empty for a moment. Closing must still wait for the replacement.
    # (It did not: the "all gone" signal from that moment stayed set, and a worker and
    # its socket outlived `aclose`.)
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    try:
        assert await executor.wait_ready(10)
        [first] = executor.stats()["pids"]
        assert executor.retire(first)
        for _ in range(1000):  # until the parent has handled its exit (bounded: 10 s)
            if not executor.stats()["per_worker"]:
                break
            await asyncio.sleep(0.01)
        assert executor.stats()["per_worker"] == {}
        assert executor.grow(1) == 1
        assert await executor.wait_ready(10)
        [second] = executor.stats()["pids"]
    finally:
        await executor.aclose()
    assert gone([second], timeout=0), "a worker outlived aclose()"


async def test_a_killed_fork_server_fails_running_calls_and_the_pool_heals(
    tmp_path: Path,
) -> None:
    # Nobody reports its workers' exits any more: they are killed, their running calls
    # fail as crashed, and a new server starts their replacements.
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    await executor.start()
    try:
        path = fifo(tmp_path)
        running = asyncio.ensure_future(
            executor.run(make_call(procfuncs.report_pid_and_block, path))
        )
        await read_fifo(path)
        old = executor.stats()["pids"]
        assert executor.roster is not None and executor.roster.server.proc is not None
        server = executor.roster.server.proc.pid
        os.kill(server, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            await asyncio.wait_for(running, 10)
        assert await asyncio.wait_for(executor.run(make_call(procfuncs.add, 1, 2)), 10) == 3
        assert await executor.wait_ready(10)
        assert executor.stats()["workers"] == 2
        assert_roster_counts(executor)
        assert not set(executor.stats()["pids"]) & set(old)
        assert gone([*old, server])
    finally:
        await executor.aclose()
