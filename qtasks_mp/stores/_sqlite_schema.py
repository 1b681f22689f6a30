"""The SQLite file: opening it safely, its schema, and rows <-> `TaskRecord`s.

One table, `tasks`; its rowid `seq` is the arrival order (a retry put back gets a
new one, like the memory store). Partial indexes keep each question the store asks
a short index walk whatever the table holds:

    tasks_ready     (lane, priority, seq)  status 'new', eta 0   -> take()
    tasks_delayed   (lane, eta)            status 'new', eta > 0 -> take(), next_eta()
    tasks_leased    (lease_owner)          status 'process'      -> renew, reclaim
    tasks_finished  (finished_at)          finished statuses     -> retention
    tasks_unique    UNIQUE (task_name, unique_key)  key given, new/process -> put_unique()
    tasks_named     (task_name, priority, seq)      status 'new', eta 0 -> rate-limited take()

`PRAGMA user_version` holds `SCHEMA_VERSION`: a later version upgrades in place
from the number it finds (`_STEPS`: each step only adds, with defaults); a file
from a newer version is refused, not mangled.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgpack

from ..errors import QTasksError
from ..task import TaskRecord, TaskStatus
from ._sqlite_codec import decode_call, decode_value

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    uuid BLOB NOT NULL UNIQUE,
    task_name TEXT NOT NULL,
    lane TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    eta REAL NOT NULL,
    retry INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    args BLOB NOT NULL,
    result BLOB,
    traceback TEXT
);
CREATE INDEX tasks_ready ON tasks (lane, priority, seq) WHERE status = 'new' AND eta = 0;
CREATE INDEX tasks_delayed ON tasks (lane, eta) WHERE status = 'new' AND eta > 0;
CREATE INDEX tasks_leased ON tasks (lease_owner) WHERE status = 'process';
CREATE INDEX tasks_finished ON tasks (finished_at)
    WHERE status IN ('success', 'error', 'cancel');
"""

# Upgrades, by the version they lead to. Each one only adds (columns with defaults,
# tables, indexes), so a file upgrades in place, in one transaction, from any version.
_STEPS: dict[int, list[str]] = {
    # -- version 2: unique tasks, progress, rate limits ------------------------------------
    2: [
        "ALTER TABLE tasks ADD COLUMN unique_key TEXT",
        "ALTER TABLE tasks ADD COLUMN progress BLOB",  # msgpack [done, total, note]
        "CREATE UNIQUE INDEX tasks_unique ON tasks (task_name, unique_key) "
        "WHERE unique_key IS NOT NULL AND status IN ('new', 'process')",
        "CREATE INDEX tasks_named ON tasks (task_name, priority, seq) "
        "WHERE status = 'new' AND eta = 0",
        # per rate-limited task: the earliest time (time.time()) its next task may start
        "CREATE TABLE rate_limits (task_name TEXT PRIMARY KEY, next_at REAL NOT NULL)",
        # cancel and requeue. `history`: the earlier runs of a requeued task, a JSON list
        # (see task.history_entry). `cancel_requests`: cancels asked for running tasks,
        # until their dispatcher ends them. A table of its own, not a column: a put
        # (INSERT OR REPLACE) must not wipe a request made while the task ran (a retry
        # put back, then cancelled before its next run).
        "ALTER TABLE tasks ADD COLUMN history TEXT",
        "CREATE TABLE cancel_requests (uuid BLOB PRIMARY KEY, requested_at REAL NOT NULL)",
        # what travels with a task from add_task to its runs (record.headers), as JSON
        "ALTER TABLE tasks ADD COLUMN headers TEXT",
    ],
    # -- end of version 2 ------------------------------------------------------------------
}

FINISHED_SQL = "status IN ('success', 'error', 'cancel')"  # matches tasks_finished's WHERE

COLUMNS = (
    "seq, uuid, task_name, lane, status, priority, eta, retry, created_at, updated_at, "
    "started_at, finished_at, args, result, traceback, unique_key, progress, headers"
)

# A new task, or one of ours put back (a retry, a run cut short): it gets the next
# `seq` (arrives now) and starts afresh, but keeps what outlives a run (`history`).
INSERT = (
    "INSERT INTO tasks (uuid, task_name, lane, status, priority, eta, retry, created_at, "
    "updated_at, started_at, finished_at, args, result, traceback, unique_key, headers) "
    "VALUES (?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, ?, ?) "
    "ON CONFLICT (uuid) DO UPDATE SET seq = (SELECT max(seq) + 1 FROM tasks), "
    "status = 'new', priority = excluded.priority, eta = excluded.eta, "
    "retry = excluded.retry, updated_at = excluded.updated_at, "
    "started_at = excluded.started_at, finished_at = 0, args = excluded.args, "
    "result = NULL, traceback = excluded.traceback, unique_key = excluded.unique_key, "
    "headers = excluded.headers, lease_owner = NULL, lease_until = NULL, progress = NULL"
)

FINISH = (
    "UPDATE tasks SET status = ?, retry = ?, updated_at = ?, started_at = ?, finished_at = ?, "
    "result = ?, traceback = ?, lease_owner = NULL, lease_until = NULL, "
    "progress = coalesce(?, progress) WHERE uuid = ?"
)


class StoreError(QTasksError, OSError):
    """The SQLite store cannot be used: a file that is not a database, a missing
    directory, no permission, a file from a newer qtasks_mp. The message names the file."""


class StoreLocked(StoreError):
    """Another program held the database's write lock for longer than the busy timeout."""


def create_private(path: str) -> None:
    """Create the file readable and writable by its owner only (0o600), if missing.

    SQLite gives its `-wal` and `-shm` files the database file's permissions.
    Raises `StoreError` when the directory does not exist or cannot be written.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise StoreError(f"cannot create the task store {path!r}: {e.strerror}") from e
    os.close(fd)


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema on first use (one transaction); refuse files we do not own."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the task store {path!r} was written by a newer qtasks_mp (schema version "
            f"{version}, this one knows {SCHEMA_VERSION}): upgrade qtasks_mp"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process won?
        if version == 0:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if tables:
                raise StoreError(
                    f"{path!r} is a SQLite database of another program (tables: "
                    f"{', '.join(t[0] for t in tables[:5])}); give the task store its own file"
                )
            # one statement at a time: executescript() would COMMIT our transaction
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = 1
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _STEPS[step]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def record_from_row(row: Sequence[Any]) -> TaskRecord:
    """A `TaskRecord` from a row of `COLUMNS` (SQLite's or PostgreSQL's: the uuid as
    bytes or as a UUID). Raises what decoding the values raises."""
    (seq, uuid, name, lane, status, priority, eta, retry, created, updated, started,
     finished, args_blob, returning, traceback, unique_key, progress, headers) = row  # fmt: skip
    args, kwargs = decode_call(args_blob)
    raw = uuid if uuid.__class__ is bytes else uuid.bytes  # asyncpg's UUID type
    record = TaskRecord(int.from_bytes(raw, "big"), name, lane, priority, args, kwargs, created)
    record.seq = seq
    record.status = TaskStatus(status)
    record.eta = eta
    record.retry = retry
    record.updated_at = updated
    record.started_at = started
    record.finished_at = finished
    record.returning = decode_value(returning)
    record.traceback = traceback
    record.unique_key = unique_key
    if progress is not None:
        record.progress = decode_progress(progress)
    if headers:
        record.headers = json.loads(headers)
    return record


def encode_progress(progress: tuple[float, float | None, str | None]) -> bytes:
    data: bytes = msgpack.packb(list(progress))
    return data


def decode_progress(data: bytes) -> tuple[float, float | None, str | None]:
    done, total, note = msgpack.unpackb(data)
    return done, total, note
