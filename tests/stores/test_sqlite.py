"""SQLiteStore in one process: durability of put, group commit, leases, watching other
connections, retention, errors that name the file, and the app on top. Order, lanes,
ETAs, the codec and restarts are the store contract's (test_store_contract.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_support import query, statuses

from qtasks_mp import QueueConfig
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores import store_from
from qtasks_mp.stores._sqlite_engine import make_owner
from qtasks_mp.stores._sqlite_schema import SCHEMA_VERSION
from qtasks_mp.stores.sqlite import SQLiteStore, StoreError, StoreLocked
from qtasks_mp.task import TaskRecord, TaskStatus, new_key


def record(*args: Any, priority: int = 0, lane: str = "inline", eta: float = 0.0) -> TaskRecord:
    rec = TaskRecord(new_key(), "t", lane, priority, args, {}, time.time())
    rec.eta = eta
    return rec


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tasks.db")
    await s.open(QueueConfig(), lambda: None)
    yield s
    await s.close()


# ------------------------------------------------------------------ selection and file


def test_store_from_maps_urls_and_paths(tmp_path: Path) -> None:
    for value in (f"sqlite:///{tmp_path}/a.db", tmp_path / "a.db", str(tmp_path / "a.db")):
        store = store_from(value)
        assert isinstance(store, SQLiteStore) and store.path == str(tmp_path / "a.db")
    assert store_from("sqlite:///rel.db").path == "rel.db"  # type: ignore[attr-defined]


async def test_file_is_private_wal_and_versioned(store: SQLiteStore) -> None:
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    await store.put(record())
    assert stat.S_IMODE(os.stat(store.path + "-wal").st_mode) == 0o600
    assert query(Path(store.path), "PRAGMA journal_mode") == [("wal",)]
    assert query(Path(store.path), "PRAGMA user_version") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize(("mode", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_synchronous_level_is_applied(tmp_path: Path, mode: str, level: int) -> None:
    store = SQLiteStore(tmp_path / "t.db", synchronous=mode.lower())
    await store.open(QueueConfig(), lambda: None)
    try:
        got = await store._read(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert got == level
    finally:
        await store.close()
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "t.db", synchronous="SOMETIMES")


# ------------------------------------------------------------------ durability, group commit


async def test_put_is_committed_when_it_returns(store: SQLiteStore) -> None:
    rec = record(7)
    await store.put(rec)
    # another connection (another process would see the same) finds it at once
    rows = query(Path(store.path), "SELECT status FROM tasks WHERE uuid = ?", (rec.uuid.bytes,))
    assert rows == [("new",)]


async def test_concurrent_puts_share_transactions(store: SQLiteStore) -> None:
    before = store.batches
    await asyncio.gather(*(store.put(record(i)) for i in range(2000)))
    assert statuses(Path(store.path)) == {"new": 2000}
    assert store.batches - before < 100, f"{store.batches - before} commits for 2000 puts"


# ------------------------------------------------------------------ order, lanes, ETA, upsert


async def test_put_back_for_retry_is_an_upsert_with_its_eta(store: SQLiteStore) -> None:
    await store.put(record(1))
    [rec] = await store.take("inline", 10, time.time())
    rec.retry, rec.eta, rec.traceback = 1, time.time() + 30, "ConnectionError: first try"
    await store.put(rec)
    assert statuses(Path(store.path)) == {"new": 1}
    assert await store.take("inline", 10, time.time()) == []
    assert await store.next_eta("inline") == rec.eta
    [again] = await store.take("inline", 10, rec.eta + 1)
    assert (again.uuid, again.retry, again.traceback) == (rec.uuid, 1, rec.traceback)


# ------------------------------------------------------------------ codec


# ------------------------------------------------------------------ leases


def _lease_to(db: Path, owner: str, until: float) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE status = 'process'",
            (owner, until),
        )
    conn.close()


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


async def _two_taken(tmp_path: Path) -> Path:
    db = tmp_path / "t.db"
    first = SQLiteStore(db)
    await first.open(QueueConfig(), lambda: None)
    for i in range(3):
        await first.put(record(i))
    assert len(await first.take("inline", 2, time.time())) == 2
    await first.close()  # releases its leases: put them back to a foreign owner below
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE tasks SET status = 'process' WHERE retry = 1")
        conn.execute("UPDATE tasks SET retry = 0")
    conn.close()
    return db


async def test_close_puts_back_the_tasks_still_leased(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = SQLiteStore(db)
    await s.open(QueueConfig(), lambda: None)
    for i in range(3):
        await s.put(record(i))
    await s.take("inline", 2, time.time())
    await s.close()
    assert query(db, "SELECT status, retry FROM tasks ORDER BY seq") == [
        ("new", 1),
        ("new", 1),
        ("new", 0),
    ]


async def test_leases_of_a_dead_process_are_reclaimed_at_open_counting_the_attempt(
    tmp_path: Path,
) -> None:
    db = await _two_taken(tmp_path)
    owner = make_owner().split("|")
    owner[1] = str(_dead_pid())
    _lease_to(db, "|".join(owner), time.time() + 3600)  # lease far from expiry
    s = SQLiteStore(db)
    await s.open(QueueConfig(), lambda: None)
    try:
        assert sorted(query(db, "SELECT status, retry FROM tasks")) == [
            ("new", 0),
            ("new", 1),
            ("new", 1),
        ]
        assert len(await s.take("inline", 10, time.time())) == 3
    finally:
        await s.close()


async def test_live_owners_keep_their_leases_until_they_expire(tmp_path: Path) -> None:
    db = await _two_taken(tmp_path)
    other = "some-other-host|1|0|x"  # liveness unknown: only the expiry counts
    _lease_to(db, other, time.time() + 3600)
    s = SQLiteStore(db)
    await s.open(QueueConfig(), lambda: None)
    await s.close()
    assert statuses(db) == {"new": 1, "process": 2}
    _lease_to(db, other, time.time() - 1)
    await s.open(QueueConfig(), lambda: None)
    await s.close()
    assert statuses(db) == {"new": 3}


async def test_own_leases_are_renewed_in_the_background(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db", lease_s=0.3)
    await s.open(QueueConfig(), lambda: None)
    try:
        await s.put(record())
        await s.take("inline", 1, time.time())
        [(first,)] = query(Path(s.path), "SELECT lease_until FROM tasks")
        deadline = time.monotonic() + 5
        while query(Path(s.path), "SELECT lease_until FROM tasks") == [(first,)]:
            assert time.monotonic() < deadline, "lease never renewed"
            await asyncio.sleep(0.02)
        assert statuses(Path(s.path)) == {"process": 1}  # never reclaimed: we are alive
    finally:
        await s.close()


# ------------------------------------------------------------------ watching, retention


async def test_commits_of_other_connections_wake_us_and_our_own_do_not(tmp_path: Path) -> None:
    woken = asyncio.Event()
    wakes: list[float] = []

    def wake() -> None:
        wakes.append(time.monotonic())
        woken.set()

    mine, other = SQLiteStore(tmp_path / "t.db"), SQLiteStore(tmp_path / "t.db")
    await mine.open(QueueConfig(), wake)
    await other.open(QueueConfig(), lambda: None)
    try:
        for i in range(20):
            await mine.put(record(i))
        await mine.counts()  # a round trip: the watcher has looked since our puts
        await asyncio.sleep(0.05)
        assert wakes == []
        start = time.monotonic()
        await other.put(record())
        await asyncio.wait_for(woken.wait(), 2)
        assert wakes[0] - start < 0.5
    finally:
        await mine.close()
        await other.close()


async def test_retention_trims_by_count_and_by_age(tmp_path: Path) -> None:
    config = QueueConfig()
    config.result_retention_count = 5
    s = SQLiteStore(tmp_path / "t.db")
    await s.open(config, lambda: None)
    try:
        for i in range(20):
            await s.put(record(i))
        for rec in await s.take("inline", 20, time.time()):
            rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
            await s.finish(rec)
        deadline = time.monotonic() + 5
        while (await s.counts())["success"] != 5:
            assert time.monotonic() < deadline, await s.counts()
            await asyncio.sleep(0.02)
        config.result_retention_s = 0.0
        await s.put(record())
        [rec] = await s.take("inline", 1, time.time())
        rec.status, rec.finished_at = TaskStatus.ERROR, time.time()
        await s.finish(rec)
        while (await s.counts())["success"] + (await s.counts())["error"]:
            assert time.monotonic() < deadline, await s.counts()
            await asyncio.sleep(0.02)
    finally:
        await s.close()


async def test_drop_queued_and_counts(store: SQLiteStore) -> None:
    for i in range(3):
        await store.put(record(i))
    await store.take("inline", 1, time.time())
    assert await store.drop_queued() == 2
    assert await store.counts() == {"new": 0, "process": 1, "success": 0, "error": 0, "cancel": 2}


# ------------------------------------------------------------------ errors that name the file


async def _open(path: Path, **options: Any) -> SQLiteStore:
    s = SQLiteStore(path, **options)
    await s.open(QueueConfig(), lambda: None)
    return s


async def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match=r"bad\.db.*not a usable SQLite database"):
        await _open(bad)


async def test_foreign_and_newer_files_and_missing_directories_are_refused(
    tmp_path: Path,
) -> None:
    foreign = tmp_path / "app.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"another program \(tables: users\)"):
        await _open(foreign)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer qtasks_mp"):
        await _open(newer)
    with pytest.raises(StoreError, match="cannot create the task store"):
        await _open(tmp_path / "no" / "such" / "dir.db")


async def test_a_lock_held_too_long_is_a_clear_error_and_the_store_recovers(
    store: SQLiteStore,
) -> None:
    store.busy_timeout_s = 0.2
    assert store._engine is not None
    store._engine.busy_timeout_s = 0.2
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(StoreLocked, match=r"tasks\.db.*locked by another program"):
            await store.put(record())
        assert time.monotonic() - start < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.put(record())  # usable again
    assert statuses(Path(store.path)) == {"new": 1}


async def test_a_short_foreign_lock_is_waited_out(store: SQLiteStore) -> None:
    holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        await store.put(record())  # waits, then commits: no "database is locked"
    finally:
        release.join()
        holder.close()
    assert statuses(Path(store.path)) == {"new": 1}


# ------------------------------------------------------------------ the app on top


async def test_app_runs_tasks_from_a_sqlite_url(tmp_path: Path) -> None:
    app = QueueTasks(store=f"sqlite:///{tmp_path}/app.db")

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task
    def join(*parts: str, sep: str = "-") -> str:
        return sep.join(parts)

    async with app:
        assert app.store.shared
        done = await app.add_task("double", 21, timeout=5)
        assert done is not None and done.returning == 42
        done = await app.add_task("join", "a", "b", sep="+", timeout=5)
        assert done is not None and done.returning == "a+b"
        tasks = await asyncio.gather(*(app.add_task("double", i) for i in range(300)))
        assert await app.wait_idle(10)
        got = [await app.get(t.uuid) for t in tasks if t is not None]
        assert [t.returning for t in got if t is not None] == [2 * i for i in range(300)]


async def test_a_version_1_file_is_upgraded_in_place_keeping_its_tasks(tmp_path: Path) -> None:
    from uuid import UUID

    from qtasks_mp.stores._sqlite_codec import encode_call
    from qtasks_mp.stores._sqlite_schema import _SCHEMA
    from qtasks_mp.stores.base import Cancelled
    from qtasks_mp.stores.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA)  # what version 1 made
    conn.execute(
        "INSERT INTO tasks (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args, traceback) VALUES "
        "(?, 't', 'inline', 'error', 0, 0, 2, 1, 1, 1, 1, ?, 'ValueError: old')",
        (UUID(int=1).bytes, encode_call((), {})),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open(QueueConfig(), lambda: None)
    try:
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        ok, again = await store.requeue(UUID(int=1), time.time()) or (None, None)
        assert ok and again is not None and again.history[0]["traceback"] == "ValueError: old"
        how, _ = await store.cancel(UUID(int=1), time.time()) or (None, None)
        assert how is Cancelled.ENDED_NOW
    finally:
        await store.close()
