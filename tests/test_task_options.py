"""Unique tasks, progress and rate limits through the app (memory store unless said)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from qtasks_mp import QueueTasks as SyncQueueTasks
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.context import AsyncTask, SyncTask
from qtasks_mp.stores.sqlite import SQLiteStore

# ------------------------------------------------------------------ unique


async def test_equal_calls_of_a_unique_task_give_one_task(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    @app.task(unique=True)
    async def report(day: str, shop: str = "main", *, rows: Any = None) -> str:
        await gate.wait()
        return day

    async with app:
        first = await app.add_task("report", "mon")
        same = [
            await app.add_task("report", "mon", "main"),
            await app.add_task("report", day="mon", shop="main", rows=None),
            await app.add_task("report", args=("mon",)),
        ]
        other = [
            await app.add_task("report", "tue"),
            await app.add_task("report", "mon", "annex"),
            await app.add_task("report", "mon", rows={"a": 1, "b": [1, 2]}),
        ]
        again = await app.add_task("report", "mon", rows={"b": [1, 2], "a": 1})
        assert first is not None and all(t is not None for t in same + other)
        assert {t.uuid for t in same if t} == {first.uuid}
        assert len({t.uuid for t in other if t} | {first.uuid}) == 4
        assert again is not None and again.uuid == other[2].uuid  # dict order does not count
        assert first.unique_key is not None and first.unique_key.startswith("report:")
        gate.set()
        assert await app.wait_idle(10)
        later = await app.add_task("report", "mon")  # the first one ended: a new task
        assert later is not None and later.uuid != first.uuid
        assert await app.wait_idle(10)


async def test_a_waited_duplicate_returns_the_outcome_of_the_task_holding_the_key(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    runs: list[int] = []

    @app.task
    async def charge(n: int) -> int:
        runs.append(n)
        await gate.wait()
        return n * 10

    async with app:
        holder = await app.add_task("charge", 1, unique_key="order-42")
        waited = asyncio.ensure_future(app.add_task("charge", 2, unique_key="order-42", timeout=10))
        await asyncio.sleep(0)
        gate.set()
        done = await waited
        assert holder is not None and done is not None
        assert (done.uuid, done.status, done.returning) == (holder.uuid, "success", 10)
        assert runs == [1]
        assert app.stats()["unfinished"] == 0


async def test_a_duplicate_that_times_out_returns_none_and_adds_nothing(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    @app.task
    async def charge(n: int) -> None:
        await gate.wait()

    async with app:
        await app.add_task("charge", 1, unique_key="k")
        assert await app.add_task("charge", 2, unique_key="k", timeout=0.05) is None
        assert (await app.store.counts())["new"] + (await app.store.counts())["process"] == 1
        gate.set()


def test_the_sync_facade_takes_unique_key(tmp_path: Path) -> None:
    app = SyncQueueTasks("sync", store=SQLiteStore(tmp_path / "t.db"))
    app.task(name="charge")(lambda n: n)
    a = app.add_task("charge", 1, unique_key="order-42")  # stopped, shared store: queued
    b = app.add_task("charge", 2, unique_key="order-42")
    assert a is not None and b is not None and a.uuid == b.uuid
    with pytest.raises(TypeError, match="unique_key"):
        app.add_task("charge", 3, unique_key=42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ rate limits


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_rate_limited_calls_wait_in_the_store_not_in_the_dispatcher(
    kind: str, tmp_path: Path, gate: asyncio.Event
) -> None:
    app = QueueTasks("rate", store=None if kind == "memory" else SQLiteStore(tmp_path / "t.db"))
    app.config.shutdown_timeout = 0.5
    started: list[int] = []

    @app.task(rate_limit="1/h")
    async def slow(i: int) -> None:
        started.append(i)
        await gate.wait()

    @app.task
    async def quick(i: int) -> int:
        return i

    async with app:
        for i in range(50):
            await app.add_task("slow", i)
        assert await app.add_task("quick", 7, timeout=10) is not None  # the lane still runs
        for _ in range(500):  # the first one starts at once (bounded: 10 s)
            if started:
                break
            await asyncio.sleep(0.02)
        counts = await app.store.counts()
        assert started == [0]
        # one started; 49 wait in the store as new (not taken into an inbox or a slot)
        assert (counts["process"], counts["new"]) == (1, 49)
        assert app.stats()["executors"]["inline"]["active"] == 1
        gate.set()
        await asyncio.sleep(0.05)
        assert started == [0]  # the next one's turn is an hour away


async def test_a_rate_limit_runs_every_call_in_the_end(app: QueueTasks) -> None:
    @app.task(rate_limit="100/s")
    async def paced(i: int) -> int:
        return i

    async with app:
        tasks = [await app.add_task("paced", i) for i in range(10)]
        assert await app.wait_idle(20)
        results = [await app.get(t.uuid) for t in tasks if t is not None]
        assert [r.returning for r in results if r is not None] == list(range(10))


# ------------------------------------------------------------------ progress


async def test_progress_of_inline_and_thread_tasks(app: QueueTasks, gate: asyncio.Event) -> None:
    seen = threading.Event()
    release = threading.Event()

    @app.task(echo=True)
    async def inline(self: AsyncTask, n: int) -> int:
        for i in range(n):
            self.progress(i + 1, total=n)
        self.progress(n, n, "waiting")
        await gate.wait()
        return n

    @app.task(echo=True)
    def threaded(self: SyncTask, n: int) -> int:
        for i in range(n):
            self.progress(i + 1.5)
        seen.set()
        release.wait(10)
        return n

    async with app:
        a = await app.add_task("inline", 1000)
        b = await app.add_task("threaded", 3)
        assert a is not None and b is not None
        await asyncio.get_running_loop().run_in_executor(None, seen.wait, 10)
        for _ in range(5):
            await asyncio.sleep(0)
        running_a, running_b = await app.get(a.uuid), await app.get(b.uuid)
        assert running_a is not None and running_a.progress == (1000, 1000, "waiting")
        assert running_b is not None and running_b.progress == (3.5, None, None)
        shown = app.stats()["progress"]
        assert shown[str(a.uuid)] == {
            "task": "inline",
            "done": 1000,
            "total": 1000,
            "note": "waiting",
        }
        assert shown[str(b.uuid)]["done"] == 3.5
        gate.set()
        release.set()
        assert await app.wait_idle(10)
        done = await app.get(a.uuid)
        assert done is not None and done.progress is not None and done.progress.note == "waiting"
        assert app.stats()["progress"] == {}


async def test_progress_refuses_values_it_cannot_keep(app: QueueTasks) -> None:
    @app.task(echo=True)
    async def bad(self: AsyncTask, how: str) -> None:
        if how == "done":
            self.progress("3")  # type: ignore[arg-type]
        elif how == "total":
            self.progress(3, total="10")  # type: ignore[arg-type]
        else:
            self.progress(3, note=7)  # type: ignore[arg-type]

    async with app:
        for how, part in (("done", "done='3' (str)"), ("total", "total='10'"), ("note", "note=")):
            task = await app.add_task("bad", how, timeout=10)
            assert task is not None and task.status == "error"
            assert "TypeError: task 'bad': self.progress" in (task.traceback or "")
            assert part in (task.traceback or "")


async def test_progress_reaches_the_sqlite_file_while_the_task_runs(
    tmp_path: Path, gate: asyncio.Event
) -> None:
    db = tmp_path / "t.db"
    app = QueueTasks("p", store=SQLiteStore(db))

    @app.task(echo=True)
    async def long(self: AsyncTask) -> None:
        self.progress(1, 3, "first")
        await gate.wait()

    def stored() -> Any:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT progress IS NOT NULL FROM tasks").fetchone()
        finally:
            conn.close()

    async with app:
        task = await app.add_task("long")
        assert task is not None
        for _ in range(500):  # the saver writes within 0.25 s; bounded at 10 s
            if stored() == (1,):
                break
            await asyncio.sleep(0.02)
        other = SQLiteStore(db)  # as another process reads it
        await other.open(app.config, lambda: None)
        try:
            record = await other.get(task.uuid)
        finally:
            await other.close()
        assert record is not None and record.progress == (1, 3, "first")
        gate.set()


# ------------------------------------------------------------------ schema upgrade


async def test_a_version_1_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    from qtasks_mp.stores import _sqlite_schema as schema

    conn = sqlite3.connect(db, isolation_level=None)
    for statement in schema._SCHEMA.split(";"):  # the version 1 schema, as 0.x wrote it
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO tasks (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args) VALUES (?, 'double', 'inline', 'new', 0, "
        "0, 0, 1, 1, 0, 0, ?)",
        (b"\x01" * 16, b"\x92\x91\x15\x80"),  # msgpack [[21], {}]
    )
    conn.close()
    app = QueueTasks("upgrade", store=SQLiteStore(db))

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    from uuid import UUID

    async with app:
        got = await app.add_task("double", 4, unique_key="k", timeout=10)
        assert got is not None and got.returning == 8
        old = await app.wait(UUID(bytes=b"\x01" * 16), 10)  # the task queued by version 1
        assert old is not None and (old.status, old.returning) == ("success", 42)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    finally:
        conn.close()


async def test_the_dashboard_reads_a_version_1_file_without_progress(tmp_path: Path) -> None:
    from qtasks_mp.stores import _sqlite_schema as schema
    from qtasks_mp.web.records import Filter
    from qtasks_mp.web.sqlite_reader import SQLiteReader

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in schema._SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO tasks (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args) VALUES (?, 'double', 'inline', 'new', 0, "
        "0, 0, 1, 1, 0, 0, ?)",
        (b"\x01" * 16, b"\x92\x91\x15\x80"),
    )
    conn.close()
    reader = SQLiteReader(str(db))
    try:
        page = await reader.page(Filter(), None, 10)
        assert [(r["task_name"], r["progress"]) for r in page.rows] == [("double", "")]
    finally:
        await reader.aclose()


class CountingStore(SQLiteStore):
    """A real SQLite store that counts its progress writes (a probe, not a mock)."""

    saves: list[tuple[float, int]]

    async def save_progress(self, records: list[Any]) -> None:
        import time

        self.saves.append((time.monotonic(), len(records)))
        await super().save_progress(records)


async def test_progress_is_saved_in_rounds_not_per_call(tmp_path: Path) -> None:
    """10,000 calls: the store sees one write per 0.25 s round, not 10,000."""
    import time

    store = CountingStore(tmp_path / "t.db")
    store.saves = []
    app = QueueTasks("rounds", store=store)
    gate = asyncio.Event()
    began: list[float] = []

    @app.task(echo=True)
    async def count(self: AsyncTask) -> None:
        began.append(time.monotonic())
        for i in range(10_000):
            self.progress(i + 1, total=10_000)
            if i % 500 == 0:
                await asyncio.sleep(0)  # let the loop run (and the saver save) meanwhile
        await gate.wait()

    async with app:
        task = await app.add_task("count")
        assert task is not None
        for _ in range(500):  # bounded: 10 s
            now = await app.get(task.uuid)
            if now is not None and now.progress is not None and now.progress.done == 10_000:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the last progress never reached the store")
        elapsed = time.monotonic() - began[0]
        gate.set()
    saves = [t for t, n in store.saves if t >= began[0]]
    assert 1 <= len(saves) <= elapsed / 0.25 + 2, (saves, elapsed)
    gaps = [b - a for a, b in itertools.pairwise(saves)]
    assert all(g >= 0.2 for g in gaps), gaps  # rounds, not calls
