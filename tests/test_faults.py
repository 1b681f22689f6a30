"""Fault injection: stores that fail, executors that cannot start, starts that race.

Each test names what must hold when a part fails: nothing accepted is left stuck in
`new`/`process` with its waiters asleep, the failure is logged once, and `stop()` still
closes every executor.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from polling import until

from qtasks_mp import AppNotRunning, Executor, ThreadExecutor
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import Call
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.stores import MemoryStore
from qtasks_mp.stores.sqlite import SQLiteStore, StoreError, StoreLocked
from qtasks_mp.task import TaskRecord


class FaultyStore(MemoryStore):
    """A memory store whose `put`, `take` or `finish` raise while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: dict[str, int] = {}  # method -> how many more calls fail (-1: all)
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        left = self.failing.get(method, 0)
        if left:
            self.failing[method] = left - 1 if left > 0 else left
            raise OSError(28, f"No space left on device (injected into {method})")

    async def put(self, record: TaskRecord) -> None:
        self._maybe_fail("put")
        await super().put(record)

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        self._maybe_fail("take")
        return await super().take(lane, limit, now)

    async def finish(self, record: TaskRecord) -> None:
        self._maybe_fail("finish")
        await super().finish(record)


class BrokenStart(Executor):
    """An executor whose `start()` raises; counts its closes."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    async def start(self) -> None:
        raise ConnectionRefusedError("cluster at tcp://10.0.0.9:8786 refused the connection")

    async def run(self, call: Call) -> Any:
        raise AssertionError("never started, never run")

    async def aclose(self, cancel_pending: bool = False) -> None:
        self.closed += 1


def _store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and "task store" in r.getMessage()
    ]


def _workers() -> set[int]:
    """Child processes other than multiprocessing's long-lived helpers."""
    helpers = ("resource_tracker", "forkserver")
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if not any(h in " ".join(p.cmdline()) for h in helpers):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _threads() -> set[threading.Thread]:
    """Live threads other than asyncio's default executor's (not ours to close)."""
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


# ------------------------------------------------------------------ store failures


async def test_a_failing_put_refuses_the_task_and_accepts_nothing() -> None:
    store = FaultyStore()
    app = QueueTasks(store=store)
    app.task(name="f")(lambda: None)
    async with app:
        store.failing["put"] = 1
        with pytest.raises(OSError, match="No space left"):
            await app.add_task("f", timeout=5)
        assert app.stats()["unfinished"] == 0
        assert sum((await store.counts()).values()) == 0
        done = await app.add_task("f", timeout=5)  # the store works again
        assert done is not None and done.status == "success"


async def test_a_failing_take_is_logged_once_and_retried_until_the_store_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore()
    app = QueueTasks(store=store)
    ran: list[int] = []
    app.task(name="f")(lambda i: ran.append(i))
    async with app:
        store.failing["take"] = 5
        for i in range(20):
            await app.add_task("f", i)
        assert await app.wait_idle(10)
    assert sorted(ran) == list(range(20))
    assert store.calls["take"] > 5
    errors = _store_errors(caplog)
    assert len(errors) == 1, errors  # once per streak, not once per try
    assert "taking tasks" in errors[0] and "No space left" in errors[0]
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_store_that_cannot_save_an_outcome_ends_the_task_error_and_wakes_waiters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore()
    app = QueueTasks(store=store)
    app.task(name="f")(lambda: "computed")
    app.task(name="g")(lambda: "also")
    async with app:
        store.failing["finish"] = -1
        done = await app.add_task("f", timeout=10)
        assert done is not None and done.status == "error"
        assert "failed to save it" in (done.traceback or "")
        assert "No space left on device" in (done.traceback or "")
        task = await app.add_task("g")
        assert task is not None
        assert await app.wait_idle(10)  # never stuck: the count of unfinished reaches 0
        assert app.stats()["unfinished"] == 0
        store.failing["finish"] = 0
    assert len(_store_errors(caplog)) == 1
    assert store.calls["finish"] >= 3  # tried again before giving up


async def test_a_failing_retry_put_ends_the_task_error_instead_of_leaving_it_running() -> None:
    store = FaultyStore()
    app = QueueTasks(store=store)
    attempts = 0

    @app.task(retry=2, retry_on_exc=[ConnectionError])
    def flaky() -> None:
        nonlocal attempts
        attempts += 1
        store.failing["put"] = 1  # the retry cannot be put back
        raise ConnectionError("CRM down")

    async with app:
        done = await app.add_task("flaky", timeout=10)
    assert done is not None and done.status == "error" and attempts == 1
    assert "ConnectionError: CRM down" in (done.traceback or "")
    assert "failed to take it back" in (done.traceback or "")


async def test_stop_closes_every_executor_even_when_the_store_fails_at_stop() -> None:
    store = FaultyStore()
    before = _threads()
    app = QueueTasks(store=store, executors={"thread": ThreadExecutor(max_workers=2)})
    app.task(name="f")(lambda: None)
    await app.start()
    assert (await app.add_task("f", timeout=5)) is not None
    assert _threads() - before  # the pool's threads run

    async def broken_drop() -> int:
        raise OSError("disk gone")

    store.drop_queued = broken_drop  # type: ignore[method-assign]
    await app.stop()
    assert app.state == "stopped"
    await until(lambda: _threads() <= before, 10, "the pool to be shut down")


# ------------------------------------------------------------------ executor starts


async def test_a_failed_start_closes_what_had_started_and_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = _workers()
    broken = BrokenStart()
    procs = ProcessExecutor(max_workers=1, autoscale=False)
    # the process pool starts first, the broken one second: the pool must be closed again
    app = QueueTasks(executors={"procs": procs, "broken": broken})
    with pytest.raises(ConnectionRefusedError, match="refused"):
        await app.start()
    assert app.state == "stopped" and not app.running
    assert broken.closed == 1
    await until(lambda: _workers() <= before, 10, "the workers to be gone")
    assert any("'broken' failed to start" in r.getMessage() for r in caplog.records)
    # a start after a failed one fails the same way, and stop() is harmless
    with pytest.raises(ConnectionRefusedError):
        await app.start()
    await app.stop()


async def test_a_first_executor_that_cannot_start_leaves_nothing_running() -> None:
    before = _threads()

    class BrokenInline(BrokenStart):
        name = "inline"

    app = QueueTasks(executors={"inline": BrokenInline(), "thread": ThreadExecutor(2)})
    with pytest.raises(ConnectionRefusedError):
        await app.start()
    await until(lambda: _threads() <= before, 10, "the threads to be gone")


async def test_an_executor_added_late_that_cannot_start_raises_to_the_adder() -> None:
    app = QueueTasks()
    async with app:
        broken = BrokenStart()

        @app.task(executor=broken)
        def late() -> None: ...

        with pytest.raises(AppNotRunning, match="could not start: ConnectionRefusedError"):
            await app.add_task("late")
        assert app.stats()["unfinished"] == 0
        with pytest.raises(AppNotRunning, match="could not start"):
            await app.add_executor("other", BrokenStart())
        assert broken.closed >= 1
        app.task(name="fine")(lambda: "ok")  # the rest of the app is unharmed
        done = await app.add_task("fine", timeout=5)
        assert done is not None and done.returning == "ok"


async def test_an_executor_added_late_starts_and_runs() -> None:
    app = QueueTasks()
    async with app:
        await app.add_executor("io", ThreadExecutor(max_workers=1))
        app.task(name="f", executor="io")(lambda: "ran on io")
        done = await app.add_task("f", timeout=5)
        assert done is not None and done.returning == "ran on io"


# ------------------------------------------------------------------ concurrent starts


def _dispatchers() -> int:
    return sum(t.get_name() == "qtasks_mp dispatcher" for t in asyncio.all_tasks())


async def test_two_concurrent_starts_make_one_dispatcher() -> None:
    app = QueueTasks()
    app.task(name="f")(lambda: None)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def user() -> None:
        async with app:
            entered.set()
            await release.wait()
            await app.add_task("f", timeout=5)

    users = [asyncio.create_task(user()) for _ in range(2)]
    await entered.wait()
    await asyncio.sleep(0)
    assert _dispatchers() == 1
    release.set()
    await asyncio.gather(*users)
    assert app.state == "stopped" and _dispatchers() == 0


async def test_nested_async_with_stops_at_the_outermost_exit() -> None:
    app = QueueTasks()
    app.task(name="f")(lambda: "ok")
    async with app:
        async with app:
            pass
        assert app.running  # the inner block does not stop the outer one's app
        done = await app.add_task("f", timeout=5)
        assert done is not None and done.status == "success"
    assert not app.running


async def test_a_start_joined_while_it_fails_raises_the_same_error_to_both() -> None:
    app = QueueTasks(executors={"broken": BrokenStart()})
    results = await asyncio.gather(app.start(), app.start(), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results), results
    assert app.state == "stopped"


def test_eight_threads_starting_through_the_sync_facade_start_one_dispatcher() -> None:
    from qtasks_mp import QueueTasks as SyncQueueTasks

    app = SyncQueueTasks()
    app.task(name="f")(lambda i: i)
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def first_call(i: int) -> None:
        barrier.wait()
        results.append(app.add_task("f", i, timeout=10))

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    loop = app.core.loop
    assert loop is not None
    count = asyncio.run_coroutine_threadsafe(_count_dispatchers(), loop).result(5)
    app.stop()
    assert count == 1
    assert sorted(r.returning for r in results) == list(range(8))


async def _count_dispatchers() -> int:
    return _dispatchers()


# ------------------------------------------------------------------ a stopped app


async def test_waiting_on_a_stopped_app_raises_instead_of_timing_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = QueueTasks()
    app.task(name="f")(lambda: None)
    with pytest.raises(AppNotRunning, match=r"async with app"):
        await app.add_task("f", timeout=5)
    task = await app.add_task("f")  # queued for the start, and the log says so once
    await app.add_task("f")
    warnings = [r for r in caplog.records if "runs when the app starts" in r.getMessage()]
    assert len(warnings) == 1
    assert task is not None
    with pytest.raises(AppNotRunning, match="nothing can run it"):
        await app.wait(task.uuid, timeout=5)
    async with app:
        done = await app.wait(task.uuid, timeout=5)
    assert done is not None and done.status == "success"


# ------------------------------------------------------------------ real SQLite locks


async def test_sqlite_locked_past_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    app = QueueTasks(store=SQLiteStore(path, busy_timeout_s=0.05))
    release = threading.Event()
    app.task(name="f")(lambda i: i * 2)

    @app.task(name="slow")
    def slow() -> str:
        release.wait(10)
        return "late"

    async with app:
        assert (await app.add_task("f", 1, timeout=5)) is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreLocked):  # refused: nothing accepted
                await app.add_task("f", 2)
            assert app.stats()["unfinished"] == 0
        finally:
            other.execute("COMMIT")
        # A lock taken while a task runs and released before the finish gives up:
        # the outcome is saved on a later try.
        task = await app.add_task("slow")
        assert task is not None
        other.execute("BEGIN EXCLUSIVE")
        release.set()
        await asyncio.sleep(0.1)
        other.execute("COMMIT")
        done = await app.wait(task.uuid, timeout=10)
        assert done is not None and done.status == "success" and done.returning == "late"
    other.close()
    reader = sqlite3.connect(path)
    try:
        rows = reader.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    finally:
        reader.close()
    assert dict(rows) == {"success": 2}


async def test_a_dead_sqlite_thread_fails_every_call_instead_of_hanging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "tasks.db")
    app = QueueTasks(store=store)
    app.task(name="f")(lambda: None)
    async with app:
        # The one way to kill the store's thread from outside: SystemExit in a read.
        with pytest.raises(StoreError, match="SystemExit"):
            await asyncio.wait_for(store._read(lambda conn: sys.exit(3)), 5)
        with pytest.raises(StoreError, match="SystemExit"):
            await asyncio.wait_for(app.add_task("f"), 5)  # at once, not a hang
        assert app.stats()["unfinished"] == 0
    assert "its thread stopped on an error" in caplog.text


class GatedSQLiteStore(SQLiteStore):
    """A SQLite store whose single-task takes (a waiting caller's) return only once a
    gate opens, after the task was taken."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        records = await super().take(lane, limit, now)  # committed: leased to this app
        if limit == 1:  # ... and the reply is on its way (as over a network) when:
            self.entered.set()
            await self.gate.wait()
        return records


async def test_a_caller_cancelled_while_its_task_is_taken_does_not_strand_the_task(
    tmp_path: Path,
) -> None:
    store = GatedSQLiteStore(tmp_path / "tasks.db")
    app = QueueTasks(store=store)
    ran: list[int] = []
    app.task(name="f")(lambda i: ran.append(i))
    async with app:
        caller = asyncio.create_task(app.add_task("f", 1, timeout=10))
        await asyncio.wait_for(store.entered.wait(), 5)  # the caller's task is taken
        caller.cancel()  # ... and the caller cancelled before the reply reaches it
        with pytest.raises(asyncio.CancelledError):
            await caller
        store.gate.set()
        assert await app.wait_idle(10)  # the task still runs
    assert ran == [1]
