"""`SQLiteStore`: the durable store. One file, no server; shared by several processes.

`QueueTasks(store="sqlite:///tasks.db")` (or a path) selects it. What it promises:

- `put()` (so `add_task`) returns once the task is committed to the file (WAL mode).
  Concurrent puts share one transaction (group commit, see `_sqlite_engine`).
- A task taken to run is leased to this store (owner, expiry), renewed in the
  background. If its dispatcher dies, the next `open()` of any process on the file (or
  a running one, within a second) puts the task back with `retry` + 1: at-least-once.
- Another process's commits wake this app within `poll_s` (it watches
  `PRAGMA data_version`; the table is never polled).
- Finished tasks are kept within the app's `result_retention_count` / `_s` (trimmed
  in the background, within a second of going past).

`synchronous="NORMAL"` (default) survives a killed process; `"FULL"` also a power cut
or OS crash, at the price of an fsync per commit. See docs/durability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from ..config import QueueConfig
from ..task import TaskRecord, TaskStatus, history_entry
from ._sqlite_codec import stored_call, stored_outcome
from ._sqlite_engine import FINISH_OP, PUT, READ, STOP, WRITE, Engine, Op
from ._sqlite_schema import (
    COLUMNS,
    INSERT,
    StoreError,
    StoreLocked,
    encode_progress,
    record_from_row,
)
from .base import (
    CANCELLED_QUEUED,
    Cancelled,
    Store,
    TurnTimer,
    ignore_cancels,
    record_with_history,
    unique_key_held,
)

__all__ = ["SQLiteStore", "StoreError", "StoreLocked"]

T = TypeVar("T")
_SYNC_MODES = ("NORMAL", "FULL", "EXTRA")


class SQLiteStore(Store):
    """Tasks in a SQLite file. `path`: the file (created 0o600 if missing; `~` expanded).

    `synchronous`: "NORMAL" (default; a committed task survives the process being
    killed) or "FULL" (also survives a power cut; one fsync per commit).
    `lease_s`: how long a taken task stays leased without renewal before another
    process may run it again (renewed every `lease_s / 3` while the owner lives; an
    owner that died on this host is detected at once, without waiting).
    `busy_timeout_s`: how long a write waits for another program's lock before
    `StoreLocked`. `poll_s`: how often other processes' commits are looked for.
    """

    shared = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        lease_s: float = 30.0,
        busy_timeout_s: float = 10.0,
        poll_s: float = 0.01,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC_MODES)}, got {mode!r}")
        if lease_s <= 0 or busy_timeout_s < 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be > 0, busy_timeout_s >= 0")
        self.path = os.path.expanduser(os.fspath(path))
        self.synchronous = mode
        self.lease_s = lease_s
        self.busy_timeout_s = busy_timeout_s
        self.poll_s = poll_s
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Callable[[], None] = _nothing
        self._turns = TurnTimer()  # wakes the app when a rate-limited task may start
        self._on_cancel: Callable[[list[UUID]], None] = ignore_cancels

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def batches(self) -> int:
        """Transactions committed for callers so far (group commit makes it small)."""
        return self._engine.batches if self._engine is not None else 0

    # ------------------------------------------------------------ lifecycle

    async def open(self, config: QueueConfig, wake: Callable[[], None]) -> None:
        """Open (creating the file and schema if needed) and reclaim dead leases.

        Raises `StoreError` (a corrupt or foreign file, a missing directory, a newer
        schema) or `StoreLocked`.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = self._turns.wake = wake
        if self._engine is not None and self._engine.is_alive():
            self._engine.config = config
            # Concurrent first calls (a gather of add_task) all open: one engine, and
            # every caller returns only once it is ready (or raises its error).
            await asyncio.wrap_future(self._engine.ready)
            return
        engine = self._engine = Engine(
            self.path,
            synchronous=self.synchronous,
            busy_timeout_s=self.busy_timeout_s,
            lease_s=self.lease_s,
            poll_s=self.poll_s,
            config=config,
            on_change=self._changed,
            on_cancel=self._cancels_seen,
        )
        engine.start()
        try:
            await asyncio.wrap_future(engine.ready)
        except BaseException:
            if self._engine is engine:
                self._engine = None
            raise

    def _changed(self) -> None:
        """From the store thread: another process committed. Scheduled after the
        batch replies already on their way (see the engine's hazards)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self._wake)

    def watch_cancels(self, on_cancel: Callable[[list[UUID]], None]) -> None:
        self._on_cancel = on_cancel

    def _cancels_seen(self, uuids: list[bytes]) -> None:
        """From the store thread: cancels asked (by another process) for tasks leased
        to us; the engine looks every `_sqlite_engine.CANCEL_CHECK_S`."""
        loop = self._loop
        if loop is not None:
            ids = [UUID(bytes=u) for u in uuids]
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self._on_cancel, ids)

    async def close(self) -> None:
        self._turns.cancel()
        engine, self._engine = self._engine, None
        if engine is not None and engine.is_alive():
            engine.queue.put(STOP)
            await asyncio.wrap_future(engine.done)

    # ------------------------------------------------------------ calls

    def _submit(self, kind: int, arg: Any) -> asyncio.Future[Any]:
        engine = self._engine
        if engine is None or not engine.is_alive():
            if engine is not None and engine.failed is not None:
                raise engine.failed
            raise StoreError(f"the task store {self.path!r} is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        engine.queue.put(Op(kind, arg, fut, loop))
        if engine.failed is not None:  # it died after the check above: nobody reads the queue
            engine.fail_pending()
        return fut

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._submit(READ, fn)
        return result

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._submit(WRITE, fn)
        return result

    def _row(self, record: TaskRecord) -> tuple[Any, ...]:
        """The parameters of `INSERT` for `record`."""
        args = stored_call(record, repr(self.path))
        return (
            record.key.to_bytes(16, "big"),
            record.task_name,
            record.lane,
            record.priority,
            record.eta,
            record.retry,
            record.created_at,
            record.updated_at,
            record.started_at,
            args,
            record.traceback,
            record.unique_key,
            json.dumps(record.headers) if record.headers else None,
        )

    async def put(self, record: TaskRecord) -> None:
        await self._submit(PUT, self._row(record))
        record.status = TaskStatus.NEW

    async def put_unique(self, record: TaskRecord) -> TaskRecord | None:
        row = self._row(record)

        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            # In the engine's write transaction (BEGIN IMMEDIATE): no other process
            # writes between this look and the insert. tasks_unique backs it up.
            found: tuple[Any, ...] | None = conn.execute(
                f"SELECT {COLUMNS} FROM tasks WHERE task_name = ? AND unique_key = ? "
                "AND status IN ('new', 'process')",
                (record.task_name, record.unique_key),
            ).fetchone()
            if found is None:
                conn.execute(INSERT, row)
            return found

        found = await self._write(run)
        if found is None:
            record.status = TaskStatus.NEW
            return None
        return record_from_row(found)

    async def save_progress(self, records: list[TaskRecord]) -> None:
        rows = [
            (encode_progress(r.progress), r.key.to_bytes(16, "big")) for r in records if r.progress
        ]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE tasks SET progress = ? WHERE uuid = ? AND status = 'process'", rows
            )

        if rows:
            await self._write(run)

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        if limit <= 0:
            return []
        engine = self._engine
        assert engine is not None
        limits = self.rate_limits(lane)
        if limits:
            records, turn = await self._submit(
                WRITE, partial(_take_limited, engine, lane, limit, now, dict(limits))
            )
            if turn is not None:  # wake the app when the next of them may start
                self._turns.at(turn, now)
            return records  # type: ignore[no-any-return]
        records_: list[TaskRecord] = await self._submit(
            WRITE, partial(_take, engine, lane, limit, now)
        )
        return records_

    async def next_eta(self, lane: str) -> float | None:
        def run(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(eta) FROM tasks WHERE lane = ? AND status = 'new' AND eta > 0",
                (lane,),
            ).fetchone()
            eta: float | None = row[0]
            return eta

        return await self._read(run)

    async def finish(self, record: TaskRecord) -> None:
        returning = stored_outcome(record, repr(self.path))
        await self._submit(
            FINISH_OP,
            (
                record.status.value,
                record.retry,
                record.updated_at,
                record.started_at,
                record.finished_at or time.time(),
                returning,
                record.traceback,
                None if record.progress is None else encode_progress(record.progress),
                record.key.to_bytes(16, "big"),
            ),
        )

    async def get(self, uuid: UUID) -> TaskRecord | None:
        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                f"SELECT {COLUMNS}, history FROM tasks WHERE uuid = ?", (uuid.bytes,)
            ).fetchone()
            return row

        row = await self._read(run)
        if row is None:
            return None
        return _decoded(row, uuid)

    async def cancel(self, uuid: UUID, now: float) -> tuple[Cancelled, TaskRecord] | None:
        def run(conn: sqlite3.Connection) -> tuple[Cancelled, tuple[Any, ...]] | None:
            row: tuple[Any, ...] | None = conn.execute(
                f"SELECT {COLUMNS}, history FROM tasks WHERE uuid = ?", (uuid.bytes,)
            ).fetchone()
            if row is None:
                return None
            if row[4] == "new":  # in the same transaction as any take: it never starts
                conn.execute(
                    "UPDATE tasks SET status = 'cancel', updated_at = ?, finished_at = ?, "
                    "traceback = ? WHERE uuid = ?",
                    (now, now, CANCELLED_QUEUED, uuid.bytes),
                )
                return Cancelled.ENDED_NOW, row
            if row[4] == "process":  # its dispatcher's store sees this within a second
                conn.execute(
                    "INSERT OR IGNORE INTO cancel_requests VALUES (?, ?)", (uuid.bytes, now)
                )
                return Cancelled.REQUESTED, row
            return Cancelled.ALREADY_ENDED, row

        found = await self._write(run)
        if found is None:
            return None
        how, row = found
        record = _decoded(row, uuid)
        if how is Cancelled.ENDED_NOW:
            record.status = TaskStatus.CANCEL
            record.updated_at = record.finished_at = now
            record.traceback = CANCELLED_QUEUED
        return how, record

    async def requeue(self, uuid: UUID, now: float) -> tuple[bool, TaskRecord] | None:
        def run(conn: sqlite3.Connection) -> tuple[bool | None, Any] | None:
            row: tuple[Any, ...] | None = conn.execute(
                f"SELECT {COLUMNS}, history FROM tasks WHERE uuid = ?", (uuid.bytes,)
            ).fetchone()
            if row is None:
                return None
            if row[4] not in ("error", "cancel"):
                return False, row
            if row[15] is not None:  # its unique key: held by another task meanwhile?
                holder = conn.execute(
                    "SELECT uuid FROM tasks WHERE task_name = ? AND unique_key = ? AND "
                    "status IN ('new', 'process')",
                    (row[2], row[15]),
                ).fetchone()
                if holder is not None:
                    return None, (row, UUID(bytes=holder[0]))
            history = json.loads(row[-1] or "[]")
            history.append(history_entry(row[4], row[7], row[11], row[14]))
            text = json.dumps(history)
            seq = conn.execute("SELECT max(seq) + 1 FROM tasks").fetchone()[0]  # arrives now
            conn.execute(
                "UPDATE tasks SET seq = ?, status = 'new', eta = 0, retry = 0, updated_at = ?, "
                "started_at = 0, finished_at = 0, result = NULL, traceback = NULL, "
                "lease_owner = NULL, lease_until = NULL, history = ? WHERE uuid = ?",
                (seq, now, text, uuid.bytes),
            )
            conn.execute("DELETE FROM cancel_requests WHERE uuid = ?", (uuid.bytes,))
            return True, (seq, *row[1:4], "new", row[5], 0.0, 0, row[8], now, 0.0, 0.0,
                          row[12], None, None, row[15], None, row[17], text)  # fmt: skip

        found = await self._write(run)
        if found is None:
            return None
        requeued, row = found
        if requeued is None:  # the unique key is held by another task
            held, holder = row
            raise unique_key_held(_decoded(held, uuid), holder)
        return requeued, _decoded(row, uuid)

    async def counts(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
            return dict(rows)

        found = await self._read(run)
        return {s.value: found.get(s.value, 0) for s in TaskStatus}

    async def drop_queued(self) -> int:
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            count: int = conn.execute(
                "UPDATE tasks SET status = 'cancel', updated_at = ?, finished_at = ?, "
                "traceback = 'cancelled: the app stopped before the task started' "
                "WHERE status = 'new'",
                (now, now),
            ).rowcount
            return count

        return await self._write(run)

    # ------------------------------------------------------------ for the CLI

    async def task_rows(self) -> list[tuple[str, str, int, float, float, float, float]]:
        """(task_name, status, retry, created_at, eta, started_at, finished_at) of every
        task: what `qtasks-mp stats` summarises. Decodes no arguments."""

        def run(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT task_name, status, retry, created_at, eta, started_at, finished_at "
                "FROM tasks"
            ).fetchall()

        return await self._read(run)

    async def list_tasks(
        self, status: str | None, task_name: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """Raw rows (uuid, task_name, status, retry, updated_at, traceback, progress:
        encoded, see `decode_progress`; history JSON or None), newest first."""

        def run(conn: sqlite3.Connection) -> list[Any]:
            where, params = [], []
            if status is not None:
                where.append("status = ?")
                params.append(status)
            if task_name is not None:
                where.append("task_name = ?")
                params.append(task_name)
            sql = (
                "SELECT uuid, task_name, status, retry, updated_at, traceback, progress, "
                "history FROM tasks"
            )
            if where:
                sql += " WHERE " + " AND ".join(where)
            return conn.execute(
                sql + " ORDER BY updated_at DESC LIMIT ?", (*params, limit)
            ).fetchall()

        return await self._read(run)

    async def purge(self, statuses: list[str], older_than_s: float = 0.0) -> int:
        """Delete tasks in `statuses` last updated more than `older_than_s` ago."""
        if not statuses:
            return 0
        horizon = time.time() - older_than_s

        def run(conn: sqlite3.Connection) -> int:
            marks = ", ".join("?" * len(statuses))
            count: int = conn.execute(
                f"DELETE FROM tasks WHERE status IN ({marks}) AND updated_at <= ?",
                (*statuses, horizon),
            ).rowcount
            return count

        return await self._write(run)


def _nothing() -> None:
    pass


def _decoded(row: tuple[Any, ...], uuid: UUID) -> TaskRecord:
    """The record of a row of `COLUMNS, history`."""
    return record_with_history(record_from_row, row, uuid)


def _take(
    engine: Engine, lane: str, limit: int, now: float, conn: sqlite3.Connection
) -> list[TaskRecord]:
    """In the store thread, inside a write transaction: lease up to `limit` ready tasks."""
    conn.execute(  # delayed tasks now due join the ready ones (keeping their arrival order)
        "UPDATE tasks SET eta = 0 WHERE lane = ? AND status = 'new' AND eta > 0 AND eta <= ?",
        (lane, now),
    )
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE lane = ? AND status = 'new' AND eta = 0 "
        "ORDER BY priority, seq LIMIT ?",
        (lane, limit),
    ).fetchall()
    return _lease(engine, rows, now, conn)


def _take_limited(
    engine: Engine,
    lane: str,
    limit: int,
    now: float,
    limits: dict[str, float],
    conn: sqlite3.Connection,
) -> tuple[list[TaskRecord], float | None]:
    """`_take` for a lane with rate-limited tasks: at most one of each, when its turn
    (`rate_limits.next_at`, shared by every process on the file) has come; the others
    of the lane as usual. Also returns the earliest turn of those left waiting."""
    conn.execute(
        "UPDATE tasks SET eta = 0 WHERE lane = ? AND status = 'new' AND eta > 0 AND eta <= ?",
        (lane, now),
    )
    rows: list[Any] = []
    turn: float | None = None
    for name, interval_s in limits.items():
        found = conn.execute("SELECT next_at FROM rate_limits WHERE task_name = ?", (name,))
        at = (found.fetchone() or (0.0,))[0]
        waiting = conn.execute(
            f"SELECT {COLUMNS} FROM tasks WHERE task_name = ? AND lane = ? AND status = 'new' "
            "AND eta = 0 ORDER BY priority, seq LIMIT 2",
            (name, lane),
        ).fetchall()
        if not waiting:
            continue
        if at <= now and len(rows) < limit:
            rows.append(waiting.pop(0))
            at = max(at, now) + interval_s
            conn.execute(
                "INSERT INTO rate_limits VALUES (?, ?) "
                "ON CONFLICT (task_name) DO UPDATE SET next_at = excluded.next_at",
                (name, at),
            )
        if waiting:
            turn = at if turn is None else min(turn, at)
    marks = ", ".join("?" * len(limits))
    rows += conn.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE lane = ? AND status = 'new' AND eta = 0 "
        f"AND task_name NOT IN ({marks}) ORDER BY priority, seq LIMIT ?",
        (lane, *limits, limit - len(rows)),
    ).fetchall()
    return _lease(engine, rows, now, conn), turn


def _lease(
    engine: Engine, rows: list[Any], now: float, conn: sqlite3.Connection
) -> list[TaskRecord]:
    """Mark `rows` process, leased to this store; those that cannot be decoded, error."""
    if not rows:
        return []
    out: list[TaskRecord] = []
    leased: list[tuple[Any, ...]] = []
    broken: list[tuple[Any, ...]] = []
    until = time.time() + engine.lease_s
    for row in rows:
        try:
            record = record_from_row(row)
        except Exception as e:  # e.g. a pickled class this program cannot import
            broken.append(
                (
                    f"SerializationError: the stored arguments of task {row[2]!r} cannot be "
                    f"decoded in this program: {type(e).__name__}: {e}\n",
                    now,
                    now,
                    row[0],
                )
            )
            continue
        record.status = TaskStatus.PROCESS
        out.append(record)
        leased.append((engine.owner, until, row[0]))
    if leased:
        conn.executemany(
            "UPDATE tasks SET status = 'process', lease_owner = ?, lease_until = ? WHERE seq = ?",
            leased,
        )
        engine.holding = True
    if broken:
        conn.executemany(
            "UPDATE tasks SET status = 'error', traceback = ?, updated_at = ?, finished_at = ? "
            "WHERE seq = ?",
            broken,
        )
    return out
