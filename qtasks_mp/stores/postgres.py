"""`PostgresStore`: one durable queue for producers and workers on many machines.

`QueueTasks(store="postgresql://user@host/db")` selects it (extra `postgres`: asyncpg).
It keeps every promise of the SQLite store, across hosts:

- `put()` (so `add_task`) returns once the task is committed (and on the server's disk,
  as its `synchronous_commit` says). Concurrent puts share one statement and one commit
  (group commit), and so do concurrent finishes. Outcomes do not wait for the disk
  unless `synchronous="FULL"`: a server crash may undo the last moments' of them, and
  those tasks run again (at-least-once), never lost.
- `take()` claims a batch with `SELECT ... FOR UPDATE SKIP LOCKED`: dispatchers on many
  hosts never wait for each other and never take the same task.
- Each task taken is leased to this store (owner, expiry on the server's clock) and the
  lease is renewed every `lease_s / 3` for the tasks this store still holds. A
  dispatcher that dies, or stalls past `lease_s`, loses its tasks: another store puts
  them back with `retry` + 1 (at-least-once; the lost attempt counts against `retry=`).
  A dead owner on the same host (same pid namespace) is seen at once, without waiting.
- Other processes' commits wake this app through LISTEN/NOTIFY (sent at commit, in the
  statement that commits); a safety poll every `poll_s` only guards against a missed one.
- Connection loss (a server restart, a failover, a network cut): calls wait and try
  again for up to `reconnect_s`, on new connections. Nothing accepted is lost: a put
  either committed (and its retry changes nothing) or did not return.
- Finished tasks are kept within the app's `result_retention_count` / `_s`.
- The schema is created, and versioned, by the store itself; see `_postgres_schema`.

    event loop                                       PostgreSQL
    ──────────                                       ──────────
    put ───┬─> _Batcher (group commit) ──> pool ─────> INSERT ... unnest(arrays) + pg_notify
    put ───┘                                           one statement per batch
    finish ┬─> _Batcher ──> outcomes' pool (async) ──> UPDATE ... FROM unnest(arrays) + pg_notify
    finish ┘
    take ────────────────────────────────> pool ─────> UPDATE ... (SELECT ... SKIP LOCKED)
    wake() <── coalesced <── listener connection <──── NOTIFY from other processes
    upkeep task: renew our leases · reclaim dead or expired ones · retention · safety poll

Hazards, and what we do:
- A reply lost with its connection after the commit: a new task's put tried again meets
  its own row and changes nothing (never bringing back a task taken or finished since); a
  put-back only replaces a row still leased to us; a take tried again may leave rows
  leased to us that we never received: they are not in `_held`, so they are not renewed,
  and their lease expires (retry + 1) like a dead one's.
- Our own commits notify our listener too: notifications from our own connections'
  backends are ignored (the app already knows), as the SQLite store ignores its own.
- A loop blocked longer than `lease_s` (a blocking call run inline) renews nothing: its
  tasks go to another dispatcher. That is the promise for a stalled dispatcher; give
  blocking work `executor="thread"` or `"process"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import UUID

import psutil

from ..config import QueueConfig
from ..task import TaskRecord, TaskStatus, history_entry
from ._postgres_schema import (
    META,
    SCHEMA_VERSION,
    TASKS,
    Statements,
    quote,
)
from ._sqlite_codec import stored_call, stored_outcome
from ._sqlite_schema import StoreError, encode_progress, record_from_row
from .base import (
    CANCELLED_QUEUED,
    Cancelled,
    Store,
    TurnTimer,
    ignore_cancels,
    record_with_history,
    unique_key_held,
)

try:
    import asyncpg
except ImportError as e:  # pragma: no cover - depends on the extra being installed
    raise ImportError(
        "the PostgreSQL store needs asyncpg: pip install 'qtasks-mp[postgres]'"
    ) from e

__all__ = ["PostgresStore", "StoreError", "StoreUnavailable"]

log = logging.getLogger("qtasks_mp.stores.postgres")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  (an item of a batch)

_MAX_BATCH = 4096
_RECLAIM_EVERY_S = 1.0
_TRIM_EVERY_S = 0.5
_TICK_S = 0.1
_CANCEL_CHECK_S = 0.25  # how often cancels asked by other processes are looked for
_FINISH_WAKE_S = 0.01


#: Stores with connections open in this process: a forked child must forget them.
_open_stores: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for store in list(_open_stores):
        store._forget_connections()
    _open_stores.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


class StoreUnavailable(StoreError):
    """The PostgreSQL server could not be reached for `reconnect_s`; the call did nothing
    that will be kept (a put that raised this may be added again safely)."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _transient(e: BaseException) -> bool:
    """Errors a new connection or another try may cure: the server restarting or gone,
    a connection cut, too many connections for now, a serialization conflict."""
    if isinstance(
        e,
        asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError
        | asyncpg.TransactionRollbackError
        | OSError
        | TimeoutError
        | asyncio.TimeoutError,
    ):
        return True
    return isinstance(e, asyncpg.InterfaceError) and "closed" in str(e)


# ------------------------------------------------------------------ lease owners


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "?"


def _started(pid: int) -> str:
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return "?"


def make_owner() -> str:
    """`host|pid namespace|pid|process start time|random`: names one open store's leases
    and lets a store on the same host (and pid namespace) see at once that it died."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_started(pid)}|{os.urandom(4).hex()}"


def owner_alive(owner: str) -> bool | None:
    """False if the owner's process is gone, True if it runs, None if we cannot tell
    (another host or container, a malformed owner): then only its lease's expiry counts."""
    parts = owner.split("|")
    if (
        len(parts) != 5
        or parts[0] != socket.gethostname()
        or parts[1] == "?"
        or parts[1] != _pid_namespace()
        or not parts[2].isdigit()
    ):
        return None
    try:
        proc = psutil.Process(int(parts[2]))
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return False
        return f"{proc.create_time():.2f}" == parts[3]  # else: the pid was reused
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None


def describe(owner: str | None) -> str:
    parts = (owner or "").split("|")
    return f"pid {parts[2]} on {parts[0]}" if len(parts) == 5 else repr(owner)


# ------------------------------------------------------------------ group commit


class _Batcher(Generic[I]):
    """Items submitted while a batch is on its way to the server form the next batch.

    At most `concurrency` batches are in flight (each on its own connection); one more
    runner may be gathering. So N concurrent `put`s cost a few statements, not N.
    """

    def __init__(
        self, flush: Callable[[list[I]], Awaitable[list[BaseException | None]]], concurrency: int
    ) -> None:
        self._flush = flush
        self._concurrency = concurrency
        self._pending: list[tuple[I, asyncio.Future[None]]] = []
        self._running = 0
        self._gathering = False
        self._runners: set[asyncio.Task[None]] = set()

    def submit(self, item: I) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, fut))
        if not self._gathering and self._running < self._concurrency:
            self._running += 1
            self._gathering = True
            runner = loop.create_task(self._run())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        return fut

    async def _run(self) -> None:
        try:
            while True:
                # Started by a submit: the other submits of this loop turn are queued by now.
                self._gathering = False
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                if not batch:
                    return
                try:
                    errors = await self._flush([item for item, _ in batch])
                except BaseException as e:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                else:
                    for (_, fut), error in zip(batch, errors, strict=True):
                        if fut.done():  # the caller was cancelled (a put committed anyway)
                            continue
                        if error is None:
                            fut.set_result(None)
                        else:
                            fut.set_exception(error)
                if self._gathering or not self._pending:
                    return
        finally:
            self._running -= 1

    async def drain(self) -> None:
        """Wait until every batch submitted so far is done (or failed)."""
        while self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)


# ------------------------------------------------------------------ the store


class PostgresStore(Store):
    """Tasks in a PostgreSQL database: `url` as libpq and asyncpg take it
    (`postgresql://user:password@host:5432/db`, `postgresql://user@/db?host=/run/postgresql`;
    other query parameters are server settings, e.g. `?search_path=jobs`).

    `schema`: where the tables live (created if missing); default: the connection's
    current schema (usually `public`). The user needs CREATE there the first time only.
    `lease_s`: how long a taken task stays leased without renewal before another store
    runs it again (renewed every `lease_s / 3` while its owner lives and its loop runs).
    `poll_s`: the safety poll (wake-ups come by LISTEN/NOTIFY; this only guards against
    a missed one). `reconnect_s`: how long a call waits for a lost server before it
    raises `StoreUnavailable`. `pool_size`: connections for calls (two more record
    outcomes, one listens).

    `synchronous`: "NORMAL" (default): outcomes (finished tasks) commit without waiting
    for the disk (PostgreSQL's asynchronous commit), so a crash of the *server* may undo
    the last moments' outcomes: those tasks run again once their lease expires, attempt
    counted, as tasks in flight at a crash do. "FULL": outcomes wait for the disk too.
    Everything else (`add_task` above all) follows the server's `synchronous_commit`.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        lease_s: float = 30.0,
        poll_s: float = 2.0,
        reconnect_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        pool_size: int = 4,
        synchronous: str = "NORMAL",
    ) -> None:
        mode = synchronous.upper()
        if mode not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"a PostgreSQL URL starts with postgresql://, got {redact(url)!r}")
        if min(lease_s, poll_s, connect_timeout_s) <= 0 or reconnect_s < 0 or pool_size < 2:
            raise ValueError(
                "lease_s, poll_s and connect_timeout_s must be > 0, reconnect_s >= 0, "
                "pool_size >= 2"
            )
        self.url = url
        self.schema = schema
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.reconnect_s = reconnect_s
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = pool_size
        self.synchronous = mode
        self.owner = ""
        self.channel = ""
        self.sql: Statements | None = None
        self._pool: Any = None
        self._outcomes: Any = None  # finishes: asynchronous commit, unless "FULL"
        self._listener: Any = None
        self._opening: asyncio.Future[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._config = QueueConfig()
        self._wake: Callable[[], None] = _nothing
        self._turns = TurnTimer()  # wakes the app when a rate-limited task may start
        self._on_cancel: Callable[[list[UUID]], None] = ignore_cancels
        self._wake_soon = False
        self._own_pids: set[int] = set()
        self._held: set[UUID] = set()
        # Per lane, the earliest ETA of its delayed tasks (None: there are none), as far as
        # this store knows for sure; a lane missing is unknown. Spares next_eta() and the
        # promotion of due tasks a statement each on every pass (see _forget_etas).
        self._etas: dict[str, float | None] = {}
        self._eta_gen = 0
        self._last_wake = 0.0
        self._wake_timer: asyncio.TimerHandle | None = None
        self._finished_since_trim = 0
        self._outage: float | None = None  # monotonic time the current outage began
        self._puts: _Batcher[tuple[Any, ...]] = _Batcher(self._flush_puts, 2)
        self._finishes: _Batcher[tuple[Any, ...]] = _Batcher(self._flush_finishes, 2)
        self.batches = 0  # statements run for batched puts and finishes: tests check it

    def __repr__(self) -> str:
        schema = f", schema={self.schema!r}" if self.schema else ""
        return f"PostgresStore({redact(self.url)!r}{schema})"

    # ------------------------------------------------------------ lifecycle

    async def open(self, config: QueueConfig, wake: Callable[[], None]) -> None:
        """Connect, create or check the schema, reclaim the leases of dead owners, listen.

        Raises `StoreError` naming the server and the fix (unreachable, no such
        database, authentication, no CREATE privilege, a newer schema).
        """
        self._config = config
        self._wake = self._turns.wake = wake
        opening = self._opening
        if opening is not None:
            # Concurrent first calls (a gather of add_task) all open: one connection
            # pool, and every caller returns only once it is ready (or raises its error).
            if not opening.done():
                await asyncio.shield(opening)
            return
        opening = self._opening = asyncio.get_running_loop().create_future()
        try:
            await self._open()
        except BaseException as e:
            opening.set_exception(e)
            opening.exception()  # retrieved here: the openers waiting get it too
            await self._discard()  # and a later open() tries afresh
            raise
        opening.set_result(None)

    async def _open(self) -> None:
        self._held.clear()
        self._forget_etas()
        self._own_pids.clear()
        self.owner = make_owner()
        try:
            self._pool = await self._create_pool(self.pool_size, durable=True)
            self._outcomes = await self._create_pool(2, durable=self.synchronous == "FULL")
            async with self._pool.acquire() as conn:
                schema = await self._ensure_schema(conn)
        except StoreError:
            raise
        except Exception as e:
            raise self._error(e, "cannot open") from e
        self.sql = Statements(quote(schema))
        self.channel = f"qtasks_mp:{schema}"
        try:
            await self._listen()
            await self._reclaim()  # a dispatcher that died before us left leases
        except Exception as e:
            raise self._error(e, "cannot open") from e
        self._upkeep = asyncio.get_running_loop().create_task(self._keep_up())
        _open_stores.add(self)

    def _forget_connections(self) -> None:
        """In a forked child: the sockets are the parent's. Drop them unclosed (closing
        would end the parent's sessions) and stand closed; `open()` connects anew."""
        self._pool = self._outcomes = self._listener = None
        self._upkeep = self._opening = self._wake_timer = None
        self._puts = _Batcher(self._flush_puts, 2)
        self._finishes = _Batcher(self._flush_finishes, 2)
        self._held.clear()
        self._forget_etas()
        self._own_pids.clear()
        self._wake_soon = False

    async def _create_pool(self, size: int, *, durable: bool) -> Any:
        settings = self._settings()
        if not durable:
            # Outcomes: their commit does not wait for the WAL to reach the disk
            # (PostgreSQL's asynchronous commit). A server crash may undo the last
            # moments' of them, never corrupt anything: such a task is back to `process`,
            # leased to a dispatcher that no longer holds it, so its lease expires and it
            # runs again, attempt counted. Everything else keeps the server's setting.
            settings = {**(settings or {}), "synchronous_commit": "off"}
        return await asyncpg.create_pool(
            self.url,
            server_settings=settings or None,
            # 0: connections are made when needed; asyncpg's task that restores a floor
            # would otherwise retry (and log a traceback) through every outage
            min_size=0,
            max_size=size,
            timeout=self.connect_timeout_s,
            command_timeout=max(60.0, self.reconnect_s),
            init=self._init_connection,
        )

    def _settings(self) -> dict[str, str]:
        """`application_name` naming this process in `pg_stat_activity`, unless the URL
        names one (asyncpg lets ours win over the URL's)."""
        if "application_name" in parse_qs(urlsplit(self.url).query):
            return {}
        return {"application_name": f"qtasks_mp {socket.gethostname()} pid {os.getpid()}"[:63]}

    async def _init_connection(self, conn: Any) -> None:
        pid = conn.get_server_pid()
        self._own_pids.add(pid)
        conn.add_termination_listener(lambda _c: self._own_pids.discard(pid))

    async def _ensure_schema(self, conn: Any) -> str:
        """Create the tables on first use (one transaction, under an advisory lock);
        refuse tables of a newer version or of another program. Returns the schema."""
        schema = self.schema
        if schema is None:
            schema = await conn.fetchval("SELECT current_schema()")
            if schema is None:
                raise StoreError(
                    f"{redact(self.url)}: the connection has no current schema (its "
                    "search_path names none that exists): pass schema='...'"
                )
        sql = Statements(quote(schema))
        try:
            if await self._version(conn, schema, sql) == SCHEMA_VERSION:
                return str(schema)
        except StoreError:
            # Seen outside the lock, another store's creation may look half done (its
            # tables in the catalog before its version row): judged again under the lock.
            pass
        # One creator at a time, per schema; the others find it done. A session lock,
        # taken before the transaction: a transaction begun earlier could still see the
        # catalog as it was before the creator committed.
        key = f"qtasks_mp:{schema}"
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        try:
            async with conn.transaction():
                # Judged first: a role that may not create schemas is told what it
                # found (a newer version, a foreign table), not that it may not create.
                version = await self._version(conn, schema, sql)
                if version == 0 and self.schema is not None:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
                if version == 0:
                    for statement in sql.create:
                        await conn.execute(statement)
                    log.info("task store %s: created its tables in schema %r", self, schema)
                    version = 1
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in sql.steps[step]:
                        await conn.execute(statement)
                    await conn.execute(sql.set_version, str(step))
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
        return str(schema)

    async def _version(self, conn: Any, schema: str, sql: Statements) -> int:
        meta, tasks = await conn.fetchrow(
            "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
            f"{quote(schema)}.{META}",
            f"{quote(schema)}.{TASKS}",
        )
        found = None
        if meta:
            found = await conn.fetchval(
                f"SELECT value FROM {sql.meta} WHERE key = 'schema_version'"
            )
        if found is None:
            if tasks:
                raise StoreError(
                    f"{redact(self.url)}: schema {schema!r} has a table {TASKS} that qtasks_mp "
                    "did not make (no version recorded); give the task store another schema"
                )
            return 0
        version = int(found)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the task store {redact(self.url)} (schema {schema!r}) was written by a newer "
                f"qtasks_mp (schema version {version}, this one knows {SCHEMA_VERSION}): "
                "upgrade qtasks_mp"
            )
        return version

    async def _listen(self) -> None:
        listener = await asyncpg.connect(
            self.url, timeout=self.connect_timeout_s, server_settings=self._settings() or None
        )
        try:
            await listener.add_listener(self.channel, self._notified)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener

    def _notified(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        """From the listener: another process committed puts ('n'; 'd' if some are
        delayed), finishes ('f'), or put tasks back ('n')."""
        if pid in self._own_pids:
            return
        if "d" in payload:
            self._forget_etas()
        if payload == "f":
            self._wake_throttled()
        else:
            self._wake_later()

    def _forget_etas(self) -> None:
        """Delayed tasks may have come or gone unseen (another process's put, a lost
        listener): ask the server again."""
        self._etas.clear()
        self._eta_gen += 1

    def _wake_later(self) -> None:
        """One wake-up per loop turn, however many notifications arrived in it."""
        if not self._wake_soon:
            self._wake_soon = True
            asyncio.get_running_loop().call_soon(self._wake_now)

    def _wake_throttled(self) -> None:
        """Finishes elsewhere matter only to waiters here, and every wake-up costs the
        dispatcher a pass: at most one per `_FINISH_WAKE_S`, the first one at once."""
        if self._wake_timer is not None or self._wake_soon:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_wake + _FINISH_WAKE_S - loop.time()
        if wait <= 0:
            self._wake_later()
        else:
            self._wake_timer = loop.call_later(wait, self._wake_now)

    def _wake_now(self) -> None:
        self._wake_soon = False
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        self._last_wake = asyncio.get_running_loop().time()
        self._wake()

    async def close(self) -> None:
        """Finish the batches on their way, put back the tasks still leased to us
        (`retry` + 1, as the SQLite store does), and close every connection."""
        if self._opening is not None and not self._opening.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._opening)
        self._turns.cancel()
        if self._pool is None:
            return
        upkeep, self._upkeep = self._upkeep, None
        if upkeep is not None:
            upkeep.cancel()
            # Wait for it without taking its CancelledError for ours: a cancel of this
            # close() must still cancel it (suppressing it here swallowed ours too).
            await asyncio.wait([upkeep])
            if not upkeep.cancelled() and upkeep.exception() is not None:
                log.warning("task store %s: its upkeep failed: %r", self, upkeep.exception())
        await self._puts.drain()
        await self._finishes.drain()
        if self.sql is not None:
            try:
                async with self._pool.acquire(timeout=self.connect_timeout_s) as conn:
                    await conn.execute(self.sql.release, self.owner)
            except Exception as e:
                log.warning("task store %s: could not put back its leased tasks: %s", self, e)
        await self._discard()

    async def _discard(self) -> None:
        _open_stores.discard(self)
        pools = [p for p in (self._pool, self._outcomes) if p is not None]
        self._pool = self._outcomes = None
        listener, self._listener = self._listener, None
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        self._opening = None
        self._held.clear()
        if listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)
            if not listener.is_closed():
                listener.terminate()
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:
                pool.terminate()

    # ------------------------------------------------------------ calls

    def _error(self, e: BaseException, doing: str = "failed") -> StoreError:
        """A clear `StoreError` for an error of asyncpg or the network."""
        where = redact(self.url)
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            text = f"{e}: create the database (createdb) or fix the URL"
        elif isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
            text = f"{e}: check the user and password in the URL (or ~/.pgpass)"
        elif isinstance(e, asyncpg.InsufficientPrivilegeError):
            text = (
                f"{e}: the user needs CREATE on the schema the first time (the tables are "
                "made then), and SELECT/INSERT/UPDATE/DELETE on them after; or pass schema="
            )
        elif isinstance(e, OSError | TimeoutError | asyncio.TimeoutError):
            text = f"cannot reach the server ({type(e).__name__}: {e}): is it running there?"
        else:
            text = f"{type(e).__name__}: {e}"
        err = StoreError(f"the task store {where} {doing}: {text}")
        err.__cause__ = e
        return err

    async def _call(self, fn: Callable[[Any], Awaitable[T]], *, outcome: bool = False) -> T:
        """Run `fn(connection)` (of the outcomes' pool if `outcome`); on a lost
        connection, try again on a new one until `reconnect_s` has passed."""
        delay = 0.02
        while True:
            pool = self._outcomes if outcome else self._pool
            if pool is None:
                raise StoreError(f"the task store {redact(self.url)} is not open")
            try:
                async with pool.acquire() as conn:
                    result = await fn(conn)
            except Exception as e:
                if not _transient(e):
                    raise e if isinstance(e, StoreError) else self._error(e) from e
                now = time.monotonic()
                if self._outage is None:
                    self._outage = now
                    log.warning(
                        "task store %s: lost the server (%s: %s); trying again for up to %gs",
                        self,
                        type(e).__name__,
                        e,
                        self.reconnect_s,
                    )
                if now - self._outage >= self.reconnect_s:
                    raise StoreUnavailable(
                        f"the task store {redact(self.url)} has been unreachable for "
                        f"{now - self._outage:.0f}s ({type(e).__name__}: {e}): check the "
                        "server; calls are tried again for reconnect_s each"
                    ) from e
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            if self._outage is not None:
                log.warning(
                    "task store %s: the server answers again (after %.1fs)",
                    self,
                    time.monotonic() - self._outage,
                )
                self._outage = None
            return result

    def _statements(self) -> Statements:
        sql = self.sql
        if sql is None or self._pool is None:
            raise StoreError(f"the task store {redact(self.url)} is not open")
        return sql

    async def put(self, record: TaskRecord) -> None:
        sql = self._statements()
        args = stored_call(record, str(self))
        if record.uuid in self._held:  # ours, taken from the store: put back
            await self._put_back(sql, record, args)
        else:
            await self._puts.submit(
                (
                    record.uuid,
                    record.task_name,
                    record.lane,
                    record.priority,
                    record.eta,
                    record.created_at,
                    args,
                    json.dumps(record.headers) if record.headers else None,
                )
            )
        record.status = TaskStatus.NEW
        if record.eta > 0:
            self._eta_gen += 1  # a promotion on its way must not overwrite this
            if record.lane in self._etas:
                known = self._etas[record.lane]
                self._etas[record.lane] = record.eta if known is None else min(known, record.eta)

    async def put_unique(self, record: TaskRecord) -> TaskRecord | None:
        sql = self._statements()
        args = stored_call(record, str(self))

        async def run(conn: Any) -> Any:
            while True:
                added, _ = await conn.fetchrow(
                    sql.put_unique,
                    record.uuid,
                    record.task_name,
                    record.lane,
                    record.priority,
                    record.eta,
                    record.created_at,
                    args,
                    record.unique_key,
                    self.channel,
                    json.dumps(record.headers) if record.headers else None,
                )
                if added is not None:
                    return None
                holder = await conn.fetchrow(sql.unique_holder, record.task_name, record.unique_key)
                if holder is not None:
                    return holder
                # the holder finished between the two statements: try again

        holder = await self._call(run)
        if holder is None or holder[1] == record.uuid:  # ours: a try again after a lost reply
            record.status = TaskStatus.NEW
            return None
        return record_from_row(holder)

    async def save_progress(self, records: list[TaskRecord]) -> None:
        sql = self._statements()
        uuids = [r.uuid for r in records if r.progress is not None]
        blobs = [encode_progress(r.progress) for r in records if r.progress is not None]

        async def run(conn: Any) -> None:
            await conn.execute(sql.save_progress, uuids, blobs)

        if uuids:
            await self._call(run, outcome=True)

    async def _put_back(self, sql: Statements, record: TaskRecord, args: bytes) -> None:
        payload = "d" if record.eta > 0 else "n"

        async def run(conn: Any) -> None:
            await conn.fetchrow(
                sql.put_back,
                record.uuid,
                record.priority,
                record.eta,
                record.retry,
                record.updated_at,
                record.started_at,
                args,
                record.traceback,
                self.owner,
                self.channel,
                payload,
            )

        try:
            await self._call(run)
        finally:
            self._held.discard(record.uuid)  # failed: the lease runs out, it comes back

    async def _flush_puts(self, items: list[tuple[Any, ...]]) -> list[BaseException | None]:
        sql = self._statements()
        columns = list(zip(*items, strict=True))
        payload = "d" if any(e > 0 for e in columns[4]) else "n"

        async def run(conn: Any) -> None:
            if any(columns[7]):  # some task carries headers: the eight-array form
                await conn.fetchrow(sql.put_headers, *columns, self.channel, payload)
            else:
                await conn.fetchrow(sql.put, *columns[:7], self.channel, payload)

        return await self._batch(run, items, self._flush_puts)

    async def _batch(
        self,
        run: Callable[[Any], Awaitable[None]],
        items: list[tuple[Any, ...]],
        one: Any,
        *,
        outcome: bool = False,
    ) -> list[BaseException | None]:
        """Run one batch statement; per item, None or the error that item gets."""
        try:
            await self._call(run, outcome=outcome)
            self.batches += 1
            return [None] * len(items)
        except StoreUnavailable:
            raise
        except StoreError as e:
            if len(items) == 1:
                return [e]
        # One bad item must not fail its batch-mates: each alone, with its own outcome.
        out: list[BaseException | None] = []
        for item in items:
            out += await one([item])
        return out

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        if limit <= 0:
            return []
        sql = self._statements()
        eta = self._etas.get(lane, 0.0)
        promote = eta is not None and eta <= now  # due, or unknown
        gen = self._eta_gen

        limits = dict(self.rate_limits(lane))
        turns: list[float] = []

        async def run(conn: Any) -> list[Any]:
            if promote:
                earliest = await conn.fetchval(sql.promote, lane, now)
                if gen == self._eta_gen:  # else a delayed put came meanwhile: unknown
                    self._etas[lane] = earliest
                else:
                    self._etas.pop(lane, None)
            if limits:
                turns.clear()
                return await self._take_limited(conn, sql, lane, limit, now, limits, turns)
            rows: list[Any] = await conn.fetch(sql.take, self.owner, self.lease_s, lane, limit)
            return rows

        rows = await self._call(run)
        if turns:  # wake the app when the next rate-limited task may start
            self._turns.at(min(turns), now)
        if not rows:
            return []
        rows.sort(key=lambda r: (r[5], r[0]))  # (priority, seq): RETURNING has no order
        out: list[TaskRecord] = []
        broken: list[tuple[UUID, str]] = []
        for row in rows:
            try:
                record = record_from_row(row)
            except Exception as e:  # e.g. a pickled class this program cannot import
                broken.append(
                    (
                        row[1],
                        f"SerializationError: the stored arguments of task {row[2]!r} cannot "
                        f"be decoded in this program: {type(e).__name__}: {e}\n",
                    )
                )
                continue
            record.status = TaskStatus.PROCESS
            self._held.add(record.uuid)
            out.append(record)
        if broken:
            uuids, texts = zip(*broken, strict=True)

            async def fail(conn: Any) -> None:
                await conn.execute(sql.broken, list(uuids), time.time(), list(texts))

            await self._call(fail)
        return out

    async def _take_limited(
        self,
        conn: Any,
        sql: Statements,
        lane: str,
        limit: int,
        now: float,
        limits: dict[str, float],
        turns: list[float],
    ) -> list[Any]:
        """`take` for a lane with rate-limited tasks: one of each whose turn has come
        (granted by `qtasks_mp_rates`, shared by every host), then the others. The
        turns of those left waiting go to `turns`."""
        rows: list[Any] = []
        for name, interval_s in limits.items():
            if len(rows) >= limit:
                break
            if not await conn.fetchval(sql.named_waiting, name, lane):
                continue
            tx = conn.transaction()
            await tx.start()
            try:
                turn = await conn.fetchval(sql.rate_turn, name, now, interval_s)
                got = []
                if turn is not None:
                    got = await conn.fetch(sql.take_named, self.owner, self.lease_s, lane, 1, name)
                if got:
                    await tx.commit()
                else:  # not its turn, or another host took the task: the turn stays
                    await tx.rollback()
            except BaseException:
                await tx.rollback()
                raise
            rows += got
            if not got:
                turn = await conn.fetchval(sql.rate_next, name)
            if turn is not None and (not got or await conn.fetchval(sql.named_waiting, name, lane)):
                turns.append(turn)
        if len(rows) < limit:
            rows += await conn.fetch(
                sql.take_others, self.owner, self.lease_s, lane, limit - len(rows), list(limits)
            )
        return rows

    async def next_eta(self, lane: str) -> float | None:
        sql = self._statements()
        if lane in self._etas:
            return self._etas[lane]
        gen = self._eta_gen

        async def run(conn: Any) -> float | None:
            eta: float | None = await conn.fetchval(sql.next_eta, lane)
            return eta

        eta = await self._call(run)
        if gen == self._eta_gen:
            self._etas[lane] = eta
        return eta

    async def finish(self, record: TaskRecord) -> None:
        self._statements()
        returning = stored_outcome(record, str(self))
        try:
            await self._finishes.submit(
                (
                    record.uuid,
                    record.status.value,
                    record.retry,
                    record.updated_at,
                    record.started_at,
                    record.finished_at or time.time(),
                    returning,
                    record.traceback,
                    None if record.progress is None else encode_progress(record.progress),
                )
            )
        finally:
            # Saved, or not (the dispatcher then ends the task `error` here): either way
            # its lease is no longer renewed, so a row left `process` comes back later.
            self._held.discard(record.uuid)
        self._finished_since_trim += 1

    async def _flush_finishes(self, items: list[tuple[Any, ...]]) -> list[BaseException | None]:
        sql = self._statements()
        columns = list(zip(*items, strict=True))

        async def run(conn: Any) -> None:
            await conn.fetchrow(sql.finish, *columns, self.channel)

        return await self._batch(run, items, self._flush_finishes, outcome=True)

    async def get(self, uuid: UUID) -> TaskRecord | None:
        sql = self._statements()

        async def run(conn: Any) -> Any:
            return await conn.fetchrow(sql.get, uuid)

        row = await self._call(run)
        if row is None:
            return None
        return _decoded(tuple(row), uuid)

    async def cancel(self, uuid: UUID, now: float) -> tuple[Cancelled, TaskRecord] | None:
        sql = self._statements()

        async def run(conn: Any) -> tuple[Cancelled, Any] | None:
            async with conn.transaction():  # the row lock orders us with any take
                status = await conn.fetchval(sql.cancel_lock, uuid)
                if status is None:
                    return None
                if status == "new":
                    await conn.execute(sql.cancel_queued, uuid, now, CANCELLED_QUEUED)
                    how = Cancelled.ENDED_NOW
                elif status == "process":  # its store sees it within a second
                    await conn.execute(sql.cancel_request, uuid)
                    how = Cancelled.REQUESTED
                else:
                    how = Cancelled.ALREADY_ENDED
                return how, await conn.fetchrow(sql.get, uuid)

        found = await self._call(run)
        if found is None:
            return None
        how, row = found
        return how, _decoded(tuple(row), uuid)

    async def requeue(self, uuid: UUID, now: float) -> tuple[bool, TaskRecord] | None:
        sql = self._statements()

        async def run(conn: Any) -> tuple[bool | None, Any] | None:
            async with conn.transaction():
                row = await conn.fetchrow(sql.requeue_lock, uuid)
                if row is None:
                    return None
                if row[4] not in ("error", "cancel"):
                    return False, row
                if row[15] is not None:  # its unique key: held by another task meanwhile?
                    holder = await conn.fetchrow(sql.unique_holder, row[2], row[15])
                    if holder is not None:
                        return None, (row, UUID(bytes=holder[1].bytes))
                history = json.loads(row[-1] or "[]")
                history.append(history_entry(row[4], row[7], row[11], row[14]))
                await conn.fetchrow(sql.requeue, uuid, now, json.dumps(history), self.channel)
                return True, await conn.fetchrow(sql.get, uuid)

        found = await self._call(run)
        if found is None:
            return None
        requeued, row = found
        if requeued is None:  # the unique key is held by another task
            held, holder = row
            raise unique_key_held(_decoded(tuple(held), uuid), holder)
        self._forget_etas()
        return requeued, _decoded(tuple(row), uuid)

    def watch_cancels(self, on_cancel: Callable[[list[UUID]], None]) -> None:
        self._on_cancel = on_cancel

    async def _check_cancels(self) -> None:
        """Cancels asked for running tasks: those leased to us go to the app; those whose
        task went back to the queue end `cancel` here; those of ended tasks are dropped."""
        sql = self._statements()

        async def run(conn: Any) -> list[Any]:
            if not await conn.fetchval(sql.cancels_any):
                return []
            rows: list[Any] = await conn.fetch(
                sql.cancels_check, time.time(), CANCELLED_QUEUED, self.owner
            )
            return rows

        rows = await self._call(run)
        mine = [UUID(bytes=r[0].bytes) for r in rows if r[0] is not None]
        if mine:
            self._on_cancel(mine)
        if rows and rows[-1][1]:
            self._wake_later()  # waiters here re-read: our own writes wake nobody

    async def counts(self) -> dict[str, int]:
        sql = self._statements()

        async def run(conn: Any) -> dict[str, int]:
            return {status: n for status, n in await conn.fetch(sql.counts)}

        found = await self._call(run)
        return {s.value: found.get(s.value, 0) for s in TaskStatus}

    async def drop_queued(self) -> int:
        sql = self._statements()

        async def run(conn: Any) -> int:
            return _rowcount(await conn.execute(sql.drop_queued, time.time()))

        dropped = await self._call(run)
        self._forget_etas()
        return dropped

    # ------------------------------------------------------------ upkeep

    async def _keep_up(self) -> None:
        """Renew our leases, reclaim dead ones, apply retention, keep listening, poll."""
        mono = time.monotonic()
        next_renew = mono + self.lease_s / 3
        next_reclaim = mono + _RECLAIM_EVERY_S * random.random()  # stores out of step
        next_trim = mono + _TRIM_EVERY_S
        next_poll = mono + self.poll_s
        next_cancels = mono
        next_listen, listen_delay = mono, _TICK_S
        failing = False
        while True:
            await asyncio.sleep(min(_TICK_S, self.lease_s / 6))
            mono = time.monotonic()
            if (self._listener is None or self._listener.is_closed()) and mono >= next_listen:
                try:  # apart from the rest: renewals must not wait for the listener
                    await self._relisten()
                    listen_delay = _TICK_S
                except Exception as e:
                    if listen_delay == _TICK_S:
                        log.warning("task store %s: cannot listen again yet: %s", self, e)
                    listen_delay = min(listen_delay * 2, 2.0)
                    next_listen = mono + listen_delay
            try:
                if self._held and mono >= next_renew:
                    next_renew = mono + self.lease_s / 3
                    await self._renew()
                if mono >= next_reclaim:
                    next_reclaim = mono + _RECLAIM_EVERY_S * (0.75 + 0.5 * random.random())
                    await self._reclaim()
                if mono >= next_cancels:
                    next_cancels = mono + _CANCEL_CHECK_S
                    await self._check_cancels()
                if self._finished_since_trim and mono >= next_trim:
                    next_trim = mono + _TRIM_EVERY_S
                    await self._trim()
                if mono >= next_poll:
                    next_poll = mono + self.poll_s
                    self._forget_etas()
                    self._wake_later()
            except Exception as e:  # the server is away: the next tick tries again
                if not failing:  # once per streak, not every tick
                    log.warning("task store %s: background upkeep failed: %s", self, e)
                failing = True
            else:
                if failing:
                    log.warning("task store %s: background upkeep works again", self)
                failing = False

    async def _relisten(self) -> None:
        """The listening connection died (a server restart): listen again, then wake the
        app, since notifications sent meanwhile were lost."""
        old, self._listener = self._listener, None
        if old is not None and not old.is_closed():
            old.terminate()
        await self._listen()
        self._forget_etas()
        self._wake_later()

    async def _renew(self) -> None:
        sql = self._statements()
        held = list(self._held)

        async def run(conn: Any) -> None:
            await conn.execute(sql.renew, self.lease_s, held, self.owner)

        await self._call(run)

    async def _reclaim(self) -> None:
        """Put back the tasks of dead owners (same host: at once) and of owners whose
        lease expired (any host; ours too: rows leased to us that we never received),
        counting the attempt."""
        sql = self._statements()

        async def owners(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql.owners)
            return rows

        now = time.time()
        for owner, until, server_now in await self._call(owners):
            if owner is None:
                continue
            dead = owner != self.owner and owner_alive(owner) is False
            if not dead and (until is None or until >= server_now):
                continue
            why = (
                f"its dispatcher died ({describe(owner)})"
                if dead
                else f"its dispatcher's lease expired ({describe(owner)})"
            )

            async def back(conn: Any, owner: str = owner, dead: bool = dead, why: str = why) -> int:
                row = await conn.fetchrow(
                    sql.reclaim, now, f"put back: {why}; attempt counted", owner, dead, self.channel
                )
                return int(row[1])

            n = await self._call(back)
            if n:
                log.warning("task store %s: %d tasks put back to run again: %s", self, n, why)
                self._wake_later()  # our own dispatcher may take them: our writes wake nobody

    async def _trim(self) -> None:
        """Drop finished tasks past `result_retention_s`, then past the newest
        `result_retention_count`. One store at a time does it (advisory lock)."""
        sql = self._statements()
        self._finished_since_trim = 0
        cfg = self._config
        horizon = time.time() - cfg.result_retention_s

        async def run(conn: Any) -> None:
            async with conn.transaction():
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"{self.channel}:trim"
                )
                if not got:
                    return
                await conn.execute(sql.trim_age, horizon)
                mark = await conn.fetchval(sql.trim_count_mark, cfg.result_retention_count)
                if mark is not None:
                    await conn.execute(sql.trim_count, mark)

        await self._call(run)

    # ------------------------------------------------------------ for the CLI

    async def task_rows(self) -> list[tuple[str, str, int, float, float, float, float]]:
        """(task_name, status, retry, created_at, eta, started_at, finished_at) of every
        task: what `qtasks-mp stats` summarises. Decodes no arguments."""
        sql = self._statements()

        async def run(conn: Any) -> list[Any]:
            return [tuple(r) for r in await conn.fetch(sql.task_rows)]

        return await self._call(run)

    async def list_tasks(
        self, status: str | None, task_name: str | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """Raw rows (uuid bytes, task_name, status, retry, updated_at, traceback,
        progress, history JSON or None), newest first: the same shape as
        `SQLiteStore.list_tasks`."""
        sql = self._statements()
        query = (
            "SELECT uuid, task_name, status, retry, updated_at, traceback, progress, history "
            f"FROM {sql.tasks} "
            "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR task_name = $2) "
            "ORDER BY updated_at DESC LIMIT $3"
        )

        async def run(conn: Any) -> list[tuple[Any, ...]]:
            rows = await conn.fetch(query, status, task_name, limit)
            return [(r[0].bytes, *tuple(r)[1:]) for r in rows]

        return await self._call(run)

    async def purge(self, statuses: list[str], older_than_s: float = 0.0) -> int:
        """Delete tasks in `statuses` last updated more than `older_than_s` ago."""
        if not statuses:
            return 0
        sql = self._statements()
        horizon = time.time() - older_than_s

        async def run(conn: Any) -> int:
            return _rowcount(
                await conn.execute(
                    f"DELETE FROM {sql.tasks} WHERE status = ANY($1::text[]) AND updated_at <= $2",
                    statuses,
                    horizon,
                )
            )

        return await self._call(run)


def _rowcount(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


def _nothing() -> None:
    pass


def _decoded(row: tuple[Any, ...], uuid: UUID) -> TaskRecord:
    """The record of a row of `COLUMNS, history`."""
    return record_with_history(record_from_row, row, uuid)
