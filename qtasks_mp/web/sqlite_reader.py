"""Read-only queries on a SQLite task store, in one thread of their own.

Paging is by keyset on `seq` (the store's rowid: arrival order), newest first, so a
page costs the same at the millionth row as at the first. A filter that matches few
rows cannot make it scan the table: each request walks at most `SCAN_BUDGET_S` of
rows back and then returns what it found with a cursor to go on from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID

from .records import (
    SERIES_BUCKET_S,
    SERIES_SPAN_S,
    Filter,
    Page,
    long_repr,
    short_repr,
    with_timings,
)

T = TypeVar("T")

SCAN_BUDGET_S = 0.05  # per page request, when a filter is sparse
SCAN_STEP = 20_000  # rowids per walked window

_ROW = (
    "seq, uuid, task_name, lane, status, priority, retry, created_at, updated_at, "
    "started_at, finished_at, eta, args, traceback"
)


def _row_dict(row: tuple[Any, ...], decode: bool = True) -> dict[str, Any]:
    from ..stores._sqlite_codec import decode_call

    (seq, uuid, name, lane, status, priority, retry, created, updated, started, finished,
     eta, args_blob, tb) = row  # fmt: skip
    try:
        args, kwargs = decode_call(args_blob)
        shown = short_repr(args, kwargs)
    except Exception as e:  # a pickled class this program cannot import
        shown = f"<cannot decode here: {type(e).__name__}>"
    return {
        "seq": seq,
        "uuid": str(UUID(bytes=uuid)),
        "task_name": name,
        "lane": lane,
        "status": status,
        "priority": priority,
        "retry": retry,
        "created_at": created,
        "updated_at": updated,
        "started_at": started,
        "finished_at": finished,
        "eta": eta,
        "args": shown,
        "error": (tb or "").strip().splitlines()[-1] if tb else "",
    }


class SQLiteReader:
    """Read-only queries on a SQLite task store, run in one thread of their own."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qtasks-mp-web")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{quote(self.path)}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._connection()))

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(shut)
        self._pool.shutdown(wait=True)

    # -------------------------------------------------------------- queries

    async def data_version(self) -> int:
        """Changes whenever another connection commits (no table read)."""
        return await self.run(lambda c: int(c.execute("PRAGMA data_version").fetchone()[0]))

    async def counts(self) -> list[tuple[str, str, str, int]]:
        """(task_name, lane, status, count): one pass over the table (cached by callers)."""
        return await self.run(
            lambda c: c.execute(
                "SELECT task_name, lane, status, count(*) FROM tasks GROUP BY 1, 2, 3"
            ).fetchall()
        )

    async def recent_finished(self, since: float, limit: int = 5000) -> list[tuple[Any, ...]]:
        """(task_name, status, created_at, eta, started_at, finished_at) finished after
        `since`, newest first: a walk of the store's finished index."""
        return await self.run(
            lambda c: c.execute(
                "SELECT task_name, status, created_at, eta, started_at, finished_at FROM tasks "
                "WHERE status IN ('success', 'error', 'cancel') AND finished_at >= ? "
                "ORDER BY finished_at DESC LIMIT ?",
                (since, limit),
            ).fetchall()
        )

    async def finished_series(self, now: float) -> list[tuple[float, int, int]]:
        start = (now // SERIES_BUCKET_S) * SERIES_BUCKET_S - SERIES_SPAN_S + SERIES_BUCKET_S

        def run(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT CAST((finished_at - ?) / ? AS INTEGER), status = 'error', count(*) "
                "FROM tasks WHERE status IN ('success', 'error', 'cancel') AND finished_at >= ? "
                "GROUP BY 1, 2",
                (start, SERIES_BUCKET_S, start),
            ).fetchall()

        buckets = {i: [0, 0] for i in range(SERIES_SPAN_S // SERIES_BUCKET_S)}
        for i, failed, n in await self.run(run):
            if i in buckets:
                buckets[i][0] += n
                buckets[i][1] += n if failed else 0
        return [(start + i * SERIES_BUCKET_S, d, f) for i, (d, f) in sorted(buckets.items())]

    async def page(self, filt: Filter, before: int | None, limit: int) -> Page:
        where, params = _where(filt)

        def run(c: sqlite3.Connection) -> Page:
            top = before
            if top is None:
                top = (c.execute("SELECT max(seq) FROM tasks").fetchone()[0] or 0) + 1
            if not where:  # no filter: one index walk
                rows = c.execute(
                    f"SELECT {_ROW} FROM tasks WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                    (top, limit + 1),
                ).fetchall()
                more = len(rows) > limit
                rows = rows[:limit]
                return Page([_row_dict(r) for r in rows], rows[-1][0] if more else None)
            found: list[tuple[Any, ...]] = []
            deadline = time.perf_counter() + SCAN_BUDGET_S
            low = c.execute("SELECT min(seq) FROM tasks").fetchone()[0] or 0
            while top > low and len(found) <= limit:
                floor = max(low, top - SCAN_STEP)
                found += c.execute(
                    f"SELECT {_ROW} FROM tasks WHERE seq < ? AND seq >= ? AND "
                    + " AND ".join(where)
                    + " ORDER BY seq DESC LIMIT ?",
                    (top, floor, *params, limit + 1 - len(found)),
                ).fetchall()
                top = floor
                if time.perf_counter() > deadline and len(found) <= limit:
                    rows = found[:limit]
                    return Page([_row_dict(r) for r in rows], top if top > low else None, top)
            more = len(found) > limit
            rows = found[:limit]
            return Page([_row_dict(r) for r in rows], rows[-1][0] if more else None)

        return await self.run(run)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        def run(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute(
                f"SELECT {_ROW}, result FROM tasks WHERE uuid = ?", (uuid.bytes,)
            ).fetchone()
            if row is None:
                return None
            detail = _detail_from_sqlite(row)
            try:  # the earlier runs of a requeued task (schema version 2)
                history = c.execute(
                    "SELECT history FROM tasks WHERE uuid = ?", (uuid.bytes,)
                ).fetchone()[0]
            except sqlite3.OperationalError:  # a file no app of version 2 has opened yet
                history = None
            detail["history"] = json.loads(history) if history else []
            return detail

        return await self.run(run)

    async def quick(self, now: float) -> tuple[dict[str, tuple[int, int]], int, list[Any]]:
        """What stays cheap at any size, read on every overview: queued and running per
        lane (index counts), tasks finished in the last minute (a count on the finished
        index alone) and the newest 5,000 finished in the last 5 minutes (for timings)."""
        from ..metrics import _lane_counts

        def run(c: sqlite3.Connection) -> tuple[dict[str, tuple[int, int]], int, list[Any]]:
            lanes = _lane_counts(c)
            done = c.execute(
                "SELECT count(*) FROM tasks WHERE status IN ('success', 'error', 'cancel') "
                "AND finished_at >= ?",
                (now - 60,),
            ).fetchone()[0]
            return lanes, int(done), []

        lanes, done, _ = await self.run(run)
        return lanes, done, await self.recent_finished(now - 300)


def _where(filt: Filter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if filt.status:
        where.append("status = ?")
        params.append(filt.status)
    if filt.name:
        where.append("task_name = ?")
        params.append(filt.name)
    if filt.text:
        # names and tracebacks (case-insensitive), the uuid in hex, and the arguments'
        # bytes: msgpack keeps strings as UTF-8, so a word in an argument is found too
        where.append(
            "(task_name LIKE ? OR traceback LIKE ? OR hex(uuid) LIKE ? "
            "OR instr(args, CAST(? AS BLOB)) > 0)"
        )
        like = f"%{filt.text}%"
        params += [like, like, f"%{filt.text.replace('-', '').upper()}%", filt.text]
    return where, params


def _detail_from_sqlite(row: tuple[Any, ...]) -> dict[str, Any]:
    from ..stores._sqlite_codec import decode_call, decode_value

    detail = _row_dict(row[:-1])
    try:
        args, kwargs = decode_call(row[12])
        detail["args_full"] = long_repr(args)
        detail["kwargs_full"] = long_repr(kwargs)
    except Exception as e:
        detail["args_full"] = detail["kwargs_full"] = f"<cannot decode here: {e!r}>"
    try:
        detail["result"] = long_repr(decode_value(row[14]))
    except Exception as e:
        detail["result"] = f"<cannot decode here: {e!r}>"
    detail["traceback"] = row[13]
    return with_timings(detail)
