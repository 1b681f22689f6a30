"""The SQLite file: opening it safely, its schema, and rows <-> `TaskRecord`s.

One table, `tasks`; its rowid `seq` is the arrival order (a retry put back gets a
new one, like the memory store). Partial indexes keep each question the store asks
a short index walk whatever the table holds:

    tasks_ready     (lane, priority, seq)  status 'new', eta 0   -> take()
    tasks_delayed   (lane, eta)            status 'new', eta > 0 -> take(), next_eta()
    tasks_leased    (lease_owner)          status 'process'      -> renew, reclaim
    tasks_finished  (finished_at)          finished statuses     -> retention

`PRAGMA user_version` holds `SCHEMA_VERSION`: a later version upgrades in place
from the number it finds (`_STEPS`, each additive); a file from a newer version is
refused, not mangled.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any
from uuid import UUID

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

# ---- version 2: cancel and requeue (issue 13) ------------------------------------------
# `history`: the earlier runs of a requeued task, a JSON list (see task.history_entry).
# `cancel_requests`: cancels asked for running tasks, until their dispatcher ends them.
# A table of its own, not a column: a put (INSERT OR REPLACE) must not wipe a request
# made while the task ran (a retry put back, then cancelled before its next run).
_V2 = """
ALTER TABLE tasks ADD COLUMN history TEXT;
CREATE TABLE cancel_requests (uuid BLOB PRIMARY KEY, requested_at REAL NOT NULL);
"""
# ---- end of version 2 ------------------------------------------------------------------

#: version -> the statements that upgrade the version before it (each step additive)
_STEPS = {2: _V2}

FINISHED_SQL = "status IN ('success', 'error', 'cancel')"  # matches tasks_finished's WHERE

COLUMNS = (
    "seq, uuid, task_name, lane, status, priority, eta, retry, created_at, updated_at, "
    "started_at, finished_at, args, result, traceback"
)

INSERT = (
    "INSERT OR REPLACE INTO tasks (uuid, task_name, lane, status, priority, eta, retry, "
    "created_at, updated_at, started_at, finished_at, args, result, traceback) "
    "VALUES (?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?)"
)

FINISH = (
    "UPDATE tasks SET status = ?, retry = ?, updated_at = ?, started_at = ?, finished_at = ?, "
    "result = ?, traceback = ?, lease_owner = NULL, lease_until = NULL WHERE uuid = ?"
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
            _run(conn, _SCHEMA)
            version = 1
        for step in range(version + 1, SCHEMA_VERSION + 1):
            _run(conn, _STEPS[step])
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _run(conn: sqlite3.Connection, script: str) -> None:
    # one statement at a time: executescript() would COMMIT our transaction
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def record_from_row(row: tuple[Any, ...]) -> TaskRecord:
    """A `TaskRecord` from a row of `COLUMNS`. Raises what decoding the values raises."""
    (seq, uuid, name, lane, status, priority, eta, retry, created, updated, started,
     finished, args_blob, returning, traceback) = row  # fmt: skip
    args, kwargs = decode_call(args_blob)
    record = TaskRecord(UUID(bytes=uuid), name, lane, priority, args, kwargs, created)
    record.seq = seq
    record.status = TaskStatus(status)
    record.eta = eta
    record.retry = retry
    record.updated_at = updated
    record.started_at = started
    record.finished_at = finished
    record.returning = decode_value(returning)
    record.traceback = traceback
    return record
