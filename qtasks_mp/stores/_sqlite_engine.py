"""The thread that owns a `SQLiteStore`'s connection: group commit, watching, leases.

    event loop (async store methods)          store thread (the only one touching SQLite)
    ─────────────────────────────────          ───────────────────────────────────────────
    put / finish / take / get ──Op──> SimpleQueue ──> take every Op waiting (a batch)
                                                      BEGIN IMMEDIATE · run them · COMMIT
            futures resolved <── call_soon_threadsafe ─┘ one hand-off per batch and loop
    app's wake() <────────────── call_soon_threadsafe ── every poll_s: PRAGMA data_version
                                                         changed = another process committed
                                                       every lease_s/3: renew our leases
                                                       every second: reclaim dead leases,
                                                         apply result retention

Group commit falls out of the queue: while one batch commits, the next one gathers,
so N concurrent `put`s cost about one transaction, not N. An Op's future is resolved
only after COMMIT returned: "accepted" means "in the database file".

Hazards, and what we do:
- sqlite3 objects belong to the thread that made them: the connection is made, used
  and closed here only; the loop hands over plain tuples (records are encoded on the
  loop, before the hand-off, because the dispatcher keeps mutating them).
- A change notification must not overtake the reply to a read made before the change:
  `wake()` is scheduled on the loop after the batch's deliveries, and the app's wake
  schedules its own callback again, so a waiter registered right after a `get()` is
  already registered when the app re-reads (see `AppCore.wait`).
- Busy database (another process writes): SQLite's own busy handler sleeps up to
  100 ms between tries; we retry ourselves every 0.5-5 ms until `busy_timeout_s`, so
  writers of several processes take turns quickly. `StoreLocked` only after that.
- One bad Op must not fail its batch-mates: a failed batch is rolled back and its
  Ops run again one transaction each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psutil

from ..config import QueueConfig
from ._sqlite_schema import (
    FINISH,
    FINISHED_SQL,
    INSERT,
    StoreError,
    StoreLocked,
    create_private,
    ensure_schema,
)
from .base import CANCELLED_QUEUED

log = logging.getLogger("qtasks_mp.stores.sqlite")

PUT, FINISH_OP, READ, WRITE = range(4)
STOP = object()  # put on the queue by close(): finish the batch, then exit
_MAX_BATCH = 8192
_RECLAIM_EVERY_S = 1.0
_TRIM_EVERY_S = 0.5
CANCEL_CHECK_S = 0.25  # how often cancels asked by other processes are looked for
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class Op:
    """One request to the store thread. `arg`: a parameter tuple (PUT, FINISH_OP) or a
    function of the connection (READ, WRITE) whose return value is the result."""

    __slots__ = ("arg", "fut", "kind", "loop")

    def __init__(
        self, kind: int, arg: Any, fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.kind = kind
        self.arg = arg
        self.fut = fut
        self.loop = loop


def _deliver(items: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for fut, error, value in items:
        if fut.done():  # the caller was cancelled
            continue
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(e) or "busy" in str(e)


def store_error(path: str, e: BaseException, busy_timeout_s: float) -> BaseException:
    """The error a caller sees for `e`: ours unchanged, SQLite's made into a clear one."""
    if not isinstance(e, sqlite3.Error):
        return e
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
        err: StoreError = StoreLocked(
            f"the task store {path!r} is locked by another program (waited "
            f"{busy_timeout_s:g}s for its write lock): close other programs that hold it "
            "(a sqlite3 shell inside a transaction?) or raise busy_timeout_s"
        )
    elif "not a database" in text or "malformed" in text:
        err = StoreError(
            f"the task store {path!r} is not a usable SQLite database ({text}): it is "
            "corrupt or another kind of file; move it away to start afresh"
        )
    elif "unable to open" in text or "readonly" in text:
        err = StoreError(
            f"cannot open the task store {path!r} ({text}): check that its directory "
            "exists and is writable"
        )
    else:
        err = StoreError(f"the task store {path!r} failed: {type(e).__name__}: {text}")
    err.__cause__ = e
    return err


def make_owner() -> str:
    """`host|pid|process start time|random`: names this store's leases, and lets another
    process on the same host see at once that the owner died (no need to wait the lease)."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_started(pid)}|{os.urandom(4).hex()}"


def _started(pid: int) -> str:
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return "?"


def owner_alive(owner: str | None) -> bool | None:
    """False if the lease owner's process is gone, True if it runs, None if we cannot
    tell (another host, a malformed owner): then only the lease's expiry counts."""
    if owner is None:
        return False
    parts = owner.split("|")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    try:
        proc = psutil.Process(int(parts[1]))
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return False
        # a different start time: the pid was reused by another program
        return f"{proc.create_time():.2f}" == parts[2]
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None


class Engine(threading.Thread):
    """Runs every SQLite call of one open store. Started by `SQLiteStore.open`."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout_s: float,
        lease_s: float,
        poll_s: float,
        config: QueueConfig,
        on_change: Callable[[], None],
        on_cancel: Callable[[list[bytes]], None],
    ) -> None:
        super().__init__(name=f"qtasks_mp-sqlite:{os.path.basename(path)}", daemon=True)
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.config = config
        self.on_change = on_change
        self.on_cancel = on_cancel
        self.owner = make_owner()
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.batches = 0  # transactions committed for callers: tests check group commit
        self.holding = False  # we may hold leases: renew them
        #: Why the thread stopped serving, if it failed: every call fails with it.
        self.failed: BaseException | None = None
        self._batch: list[Op] = []  # the ops being run now (to fail them if we die)
        self._upkeep_failing = False
        self._conn: sqlite3.Connection | None = None
        self._data_version = 0
        self._finished_since_trim = 0

    # ------------------------------------------------------------ the thread

    def run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as e:
            self.ready.set_exception(store_error(self.path, e, self.busy_timeout_s))
            self.done.set_result(None)
            return
        self._conn = conn
        try:
            self._reclaim(time.time())  # a dispatcher that died before us left leases
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except BaseException as e:
            conn.close()
            self.ready.set_exception(store_error(self.path, e, self.busy_timeout_s))
            self.done.set_result(None)
            return
        self.ready.set_result(None)
        try:
            self._serve()
        except BaseException as e:  # a bug, or SystemExit from a read: never die silently
            failed = StoreError(
                f"the task store {self.path!r} stopped working: its thread failed on "
                f"{type(e).__name__}: {e}. Stop and start the app to reopen it."
            )
            failed.__cause__ = e
            self.failed = failed
            log.error(
                "task store %r: its thread stopped on an error; every call to the store "
                "fails from now on (stop and start the app to reopen it)",
                self.path,
                exc_info=e,
            )
            self.fail_pending()
        finally:
            try:
                self._release_leases()
            finally:
                conn.close()
                self.done.set_result(None)

    def _connect(self) -> sqlite3.Connection:
        create_private(self.path)
        # timeout=0: we retry busy errors ourselves, faster than SQLite's handler.
        # isolation_level=None: we write BEGIN / COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            mode = self._busy_retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the task store {self.path!r} cannot use WAL mode (got {mode!r}): "
                    "put it on a local disk, not a network share"
                )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._busy_retry(lambda: ensure_schema(conn, self.path))
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        next_tick = 0.0
        next_renew = time.monotonic() + self.lease_s / 3
        next_reclaim = next_trim = time.monotonic() + _RECLAIM_EVERY_S
        next_cancels = time.monotonic()
        while True:
            wait = next_tick - time.monotonic()
            try:
                op = get(timeout=wait) if wait > 0 else get_nowait()
            except queue.Empty:
                op = None
            stop = op is STOP
            batch: list[Op] = []
            if op is not None and not stop:
                batch.append(op)
                while len(batch) < _MAX_BATCH:
                    try:
                        op = get_nowait()
                    except queue.Empty:
                        break
                    if op is STOP:
                        stop = True
                        break
                    batch.append(op)
            if batch:
                self._batch = batch
                self._run_batch(batch)
                self._batch = []
            if stop:
                return
            mono = time.monotonic()
            if mono < next_tick:
                continue
            next_tick = mono + self.poll_s
            try:
                self._watch()
                if self.holding and mono >= next_renew:
                    next_renew = mono + self.lease_s / 3
                    self._renew()
                if mono >= next_reclaim:
                    next_reclaim = mono + _RECLAIM_EVERY_S
                    self._reclaim(time.time())
                if mono >= next_cancels:
                    next_cancels = mono + CANCEL_CHECK_S
                    self._check_cancels(time.time())
                if mono >= next_trim and self._finished_since_trim:
                    next_trim = mono + _TRIM_EVERY_S
                    self._trim(time.time())
            except Exception as e:  # e.g. a long foreign lock: try again next tick
                if not self._upkeep_failing:  # once per streak, not every tick
                    log.warning("task store %r: background upkeep failed: %s", self.path, e)
                self._upkeep_failing = True
            else:
                self._upkeep_failing = False

    def fail_pending(self) -> None:
        """The thread failed: fail the ops it was running and every op still queued."""
        error = self.failed or StoreError(f"the task store {self.path!r} is closed")
        ops, self._batch = self._batch, []
        while True:
            try:
                op = self.queue.get_nowait()
            except queue.Empty:
                break
            if op is not STOP:
                ops.append(op)
        for op in ops:
            items: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = [
                (op.fut, error, None)
            ]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                op.loop.call_soon_threadsafe(_deliver, items)

    # ------------------------------------------------------------ batches

    def _busy_retry(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.0005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def _transaction(self, ops: list[Op]) -> list[Any]:
        conn = self._conn
        assert conn is not None
        write = any(op.kind != READ for op in ops)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            results: list[Any] = []
            i, n = 0, len(ops)
            while i < n:
                kind = ops[i].kind
                if kind in (PUT, FINISH_OP):
                    j = i + 1
                    while j < n and ops[j].kind == kind:
                        j += 1
                    conn.executemany(INSERT if kind == PUT else FINISH, [o.arg for o in ops[i:j]])
                    results += [None] * (j - i)
                    if kind == FINISH_OP:
                        self._finished_since_trim += j - i
                    i = j
                else:
                    results.append(ops[i].arg(conn))
                    i += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _run_batch(self, ops: list[Op]) -> None:
        replies: list[tuple[Op, BaseException | None, Any]]
        try:
            results = self._busy_retry(lambda: self._transaction(ops))
            self.batches += 1
            replies = [(op, None, r) for op, r in zip(ops, results, strict=True)]
        except Exception as e:
            if len(ops) == 1 or (isinstance(e, sqlite3.OperationalError) and _is_busy(e)):
                err = store_error(self.path, e, self.busy_timeout_s)
                replies = [(op, err, None) for op in ops]
            else:  # isolate the culprit: each op alone
                replies = []
                for op in ops:
                    try:
                        result = self._busy_retry(partial(self._transaction, [op]))
                        replies.append((op, None, result[0]))
                    except Exception as e1:
                        replies.append((op, store_error(self.path, e1, self.busy_timeout_s), None))
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, error, value in replies:
            by_loop.setdefault(op.loop, []).append((op.fut, error, value))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_deliver, items)

    # ------------------------------------------------------------ upkeep

    def _watch(self) -> None:
        """Another connection committed since we last looked: tell the app."""
        assert self._conn is not None
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self.on_change()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        conn = self._conn
        assert conn is not None

        def run() -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(sql, params).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return count

        count: int = self._busy_retry(run)
        return count

    def _renew(self) -> None:
        renewed = self._write(
            "UPDATE tasks SET lease_until = ? WHERE status = 'process' AND lease_owner = ?",
            (time.time() + self.lease_s, self.owner),
        )
        if renewed == 0:
            self.holding = False

    def _reclaim(self, now: float) -> None:
        """Put back the tasks leased to dead dispatchers (or to silent ones whose lease
        expired), counting the attempt. Never our own: we are alive."""
        assert self._conn is not None
        owners = self._conn.execute(
            "SELECT lease_owner, min(lease_until) FROM tasks WHERE status = 'process' "
            "GROUP BY lease_owner"
        ).fetchall()
        back = 0
        for owner, until in owners:
            if owner == self.owner:
                continue
            alive = owner_alive(owner)
            params: tuple[Any, ...]
            if alive is False:
                cond, params = "lease_owner IS ?", (owner,)
                why = f"its dispatcher died ({_describe(owner)})"
            elif until is not None and until < now:
                cond, params = "lease_owner IS ? AND lease_until < ?", (owner, now)
                why = f"its dispatcher's lease expired ({_describe(owner)})"
            else:
                continue
            n = self._write(
                "UPDATE tasks SET status = 'new', eta = 0, retry = retry + 1, "
                "lease_owner = NULL, lease_until = NULL, updated_at = ?, traceback = ? "
                f"WHERE status = 'process' AND {cond}",
                (now, f"put back: {why}; attempt counted", *params),
            )
            if n:
                back += n
                log.warning("task store %r: %d tasks put back to run again: %s", self.path, n, why)
        if back:
            self.on_change()  # our own dispatcher may take them: our writes wake nobody

    def _check_cancels(self, now: float) -> None:
        """Cancels asked for running tasks (`cancel_requests`, usually empty: one read).
        Those leased to us go to the app (`on_cancel`); those whose task went back to
        the queue meanwhile (a retry put back, a lease reclaimed) end `cancel` here; those
        whose task ended are dropped."""
        conn = self._conn
        assert conn is not None
        if conn.execute("SELECT 1 FROM cancel_requests LIMIT 1").fetchone() is None:
            return
        ended = self._write(
            "UPDATE tasks SET status = 'cancel', updated_at = ?, finished_at = ?, "
            "traceback = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE status = 'new' AND uuid IN (SELECT uuid FROM cancel_requests)",
            (now, now, CANCELLED_QUEUED),
        )
        self._write(
            "DELETE FROM cancel_requests WHERE uuid NOT IN "
            "(SELECT uuid FROM tasks WHERE status = 'process')",
            (),
        )
        mine = conn.execute(
            "SELECT t.uuid FROM cancel_requests AS r JOIN tasks AS t ON t.uuid = r.uuid "
            "WHERE t.status = 'process' AND t.lease_owner = ?",
            (self.owner,),
        ).fetchall()
        if mine:
            self.on_cancel([row[0] for row in mine])
        if ended:
            self.on_change()  # waiters here re-read: our own writes wake nobody

    def _trim(self, now: float) -> None:
        """Drop finished tasks past `result_retention_s`, then past the newest
        `result_retention_count`."""
        self._finished_since_trim = 0
        cfg = self.config
        self._write(
            f"DELETE FROM tasks WHERE {FINISHED_SQL} AND finished_at < ?",
            (now - cfg.result_retention_s,),
        )
        assert self._conn is not None
        row = self._conn.execute(
            f"SELECT finished_at FROM tasks WHERE {FINISHED_SQL} "
            "ORDER BY finished_at DESC LIMIT 1 OFFSET ?",
            (cfg.result_retention_count,),
        ).fetchone()
        if row is not None:
            self._write(f"DELETE FROM tasks WHERE {FINISHED_SQL} AND finished_at <= ?", row)

    def _release_leases(self) -> None:
        """Closing with tasks still leased (the app did not stop them): put them back."""
        if self._conn is None or not self.holding:
            return
        try:
            self._write(
                "UPDATE tasks SET status = 'new', eta = 0, retry = retry + 1, "
                "lease_owner = NULL, lease_until = NULL WHERE status = 'process' "
                "AND lease_owner = ?",
                (self.owner,),
            )
        except sqlite3.Error as e:
            log.warning("task store %r: could not release leases at close: %s", self.path, e)


def _describe(owner: str | None) -> str:
    if owner is None:
        return "no owner"
    parts = owner.split("|")
    return f"pid {parts[1]} on {parts[0]}" if len(parts) == 4 else owner
