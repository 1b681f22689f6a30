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
    ROW,
    SERIES_BUCKET_S,
    SERIES_SPAN_S,
    Filter,
    Page,
    detail_from_row,
    row_dict,
)

T = TypeVar("T")

SCAN_BUDGET_S = 0.05  # per page request, when a filter is sparse
SCAN_STEP = 20_000  # rowids per walked window


class SQLiteReader:
    """Read-only queries on a SQLite task store, run in one thread of their own."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qtasks-mp-web")
        self._conn: sqlite3.Connection | None = None
        self._has_progress = False

    def _row(self, c: sqlite3.Connection) -> str:
        """The columns of a row; a file of schema version 1 (before progress) gives NULL
        for progress until a store of this version upgrades it."""
        if self._has_progress:
            return ROW
        columns = {r[1] for r in c.execute("PRAGMA table_info(tasks)")}
        self._has_progress = "progress" in columns
        return ROW if self._has_progress else ROW.replace(", progress", ", NULL")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{quote(self.path)}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._connection()))

    def twin(self) -> SQLiteReader:
        """A reader of the same file on a connection and thread of its own (slow counts)."""
        return SQLiteReader(self.path)

    async def aclose(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(shut)
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    # -------------------------------------------------------------- queries

    async def data_version(self) -> int:
        """Changes whenever another connection commits (no table read)."""
        return await self.run(lambda c: int(c.execute("PRAGMA data_version").fetchone()[0]))

    async def lane_counts(self) -> dict[str, tuple[int, int]]:
        """{lane: (queued, running)}: index counts, cheap at any size."""
        from ..metrics import _lane_counts

        return await self.run(_lane_counts)

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
                    f"SELECT {self._row(c)} FROM tasks WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                    (top, limit + 1),
                ).fetchall()
                more = len(rows) > limit
                rows = rows[:limit]
                return Page([row_dict(r) for r in rows], rows[-1][0] if more else None)
            found: list[tuple[Any, ...]] = []
            deadline = time.perf_counter() + SCAN_BUDGET_S
            low = c.execute("SELECT min(seq) FROM tasks").fetchone()[0] or 0
            while top > low and len(found) <= limit:
                floor = max(low, top - SCAN_STEP)
                found += c.execute(
                    f"SELECT {self._row(c)} FROM tasks WHERE seq < ? AND seq >= ? AND "
                    + " AND ".join(where)
                    + " ORDER BY seq DESC LIMIT ?",
                    (top, floor, *params, limit + 1 - len(found)),
                ).fetchall()
                top = floor
                if time.perf_counter() > deadline and len(found) <= limit:
                    rows = found[:limit]
                    return Page([row_dict(r) for r in rows], top if top > low else None, top)
            more = len(found) > limit
            rows = found[:limit]
            return Page([row_dict(r) for r in rows], rows[-1][0] if more else None)

        return await self.run(run)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        def run(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute(
                f"SELECT {self._row(c)}, result FROM tasks WHERE uuid = ?", (uuid.bytes,)
            ).fetchone()
            if row is None:
                return None
            detail = detail_from_row(row)
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
