"""Read-only queries on a PostgreSQL task store: the questions `sqlite_reader.py` asks.

Its own small asyncpg pool, whose sessions are read-only (`default_transaction_read_only`
and a short `statement_timeout`): a dashboard left open cannot take, lock or change a
task, nor hold the server's work up. Each question walks one of the store's indexes:

    page            tasks_seq (keyset on `seq`, newest first; a sparse filter walks
                    windows of `SCAN_STEP` rows for at most `SCAN_BUDGET_S`, as SQLite's)
    task            the primary key
    lane counts     tasks_ready, tasks_delayed, tasks_leased (partial indexes)
    recent, series  tasks_finished
    counts          the whole table, grouped (`Source` runs it in the background)

`data_version` changes when any transaction commits on the server (the snapshot's
xmax), so the live page asks for an update when the store may have changed, no more.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import UUID

from ..stores._postgres_schema import FINISHED_SQL, TASKS, quote
from .records import ROW, SERIES_BUCKET_S, SERIES_SPAN_S, Filter, Page, detail_from_row, row_dict

SCAN_BUDGET_S = 0.05  # per page request, when a filter is sparse
SCAN_STEP = 20_000  # seq values per walked window
_SETTINGS = {
    "default_transaction_read_only": "on",
    "statement_timeout": "30s",
    "application_name": "qtasks_mp dashboard",
}


class PostgresReader:
    """Read-only queries on the tasks table of a PostgreSQL store (`url`, `schema` as
    `PostgresStore` takes them; default schema: the connection's current one)."""

    def __init__(
        self,
        url: str,
        schema: str | None = None,
        *,
        scan_step: int = SCAN_STEP,
        scan_budget_s: float = SCAN_BUDGET_S,
    ) -> None:
        self.url = url
        self.schema = schema
        self.scan_step = scan_step
        self.scan_budget_s = scan_budget_s
        self._pool: Any = None
        self._opening: asyncio.Lock | None = None
        self._table = ""

    def twin(self) -> PostgresReader:
        """The reader for slow counts: this one (its pool has a connection for each)."""
        return self

    async def _conn_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                import asyncpg

                pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=2, timeout=10.0, server_settings=_SETTINGS
                )
                try:
                    schema = self.schema or await pool.fetchval("SELECT current_schema()")
                    self._table = f"{quote(str(schema))}.{TASKS}"
                    found = await pool.fetchval("SELECT to_regclass($1)", self._table)
                except BaseException:
                    await pool.close()
                    raise
                if found is None:
                    await pool.close()
                    raise LookupError(f"no qtasks_mp task table {self._table} in that database")
                self._pool = pool
        return self._pool

    async def check(self) -> None:
        """Connect and find the table; raises what is wrong (the CLI prints it)."""
        await self._conn_pool()

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        pool = await self._conn_pool()
        return list(await pool.fetch(sql.replace("{t}", self._table), *args))

    # -------------------------------------------------------------- queries

    async def data_version(self) -> int:
        rows = await self._fetch("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8")
        return int(rows[0][0])

    async def lane_counts(self) -> dict[str, tuple[int, int]]:
        """{lane: (queued, running)}: three partial-index counts, cheap at any size."""
        out: dict[str, list[int]] = {}
        for where, i in (
            ("status = 'new' AND eta = 0", 0),
            ("status = 'new' AND eta > 0", 0),
            ("status = 'process'", 1),
        ):
            for lane, n in await self._fetch(
                f"SELECT lane, count(*) FROM {{t}} WHERE {where} GROUP BY lane"
            ):
                out.setdefault(lane, [0, 0])[i] += n
        return {lane: (q, r) for lane, (q, r) in out.items()}

    async def counts(self) -> list[tuple[str, str, str, int]]:
        """(task_name, lane, status, count): one pass over the table (cached by callers)."""
        rows = await self._fetch(
            "SELECT task_name, lane, status, count(*) FROM {t} GROUP BY 1, 2, 3"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def recent_finished(self, since: float, limit: int = 5000) -> list[tuple[Any, ...]]:
        """(task_name, status, created_at, eta, started_at, finished_at) finished after
        `since`, newest first."""
        rows = await self._fetch(
            "SELECT task_name, status, created_at, eta, started_at, finished_at FROM {t} "
            f"WHERE {FINISHED_SQL} AND finished_at >= $1 ORDER BY finished_at DESC LIMIT $2",
            since,
            limit,
        )
        return [tuple(r) for r in rows]

    async def finished_series(self, now: float) -> list[tuple[float, int, int]]:
        start = (now // SERIES_BUCKET_S) * SERIES_BUCKET_S - SERIES_SPAN_S + SERIES_BUCKET_S
        rows = await self._fetch(
            "SELECT floor((finished_at - $1) / $2)::int, status = 'error', count(*) FROM {t} "
            f"WHERE {FINISHED_SQL} AND finished_at >= $1 GROUP BY 1, 2",
            start,
            float(SERIES_BUCKET_S),
        )
        buckets = {i: [0, 0] for i in range(SERIES_SPAN_S // SERIES_BUCKET_S)}
        for i, failed, n in rows:
            if i in buckets:
                buckets[i][0] += n
                buckets[i][1] += n if failed else 0
        return [(start + i * SERIES_BUCKET_S, d, f) for i, (d, f) in sorted(buckets.items())]

    async def quick(self, now: float) -> tuple[dict[str, tuple[int, int]], int, list[Any]]:
        """Queued and running per lane, tasks finished in the last minute, and the newest
        5,000 finished in the last 5 minutes (for timings): index walks only."""
        lanes = await self.lane_counts()
        done = await self._fetch(
            f"SELECT count(*) FROM {{t}} WHERE {FINISHED_SQL} AND finished_at >= $1", now - 60
        )
        return lanes, int(done[0][0]), await self.recent_finished(now - 300)

    async def page(self, filt: Filter, before: int | None, limit: int) -> Page:
        where, params = _where(filt)
        top = before
        if top is None:
            top = int((await self._fetch("SELECT coalesce(max(seq), 0) FROM {t}"))[0][0]) + 1
        if not where:  # no filter: one index walk
            rows = await self._fetch(
                f"SELECT {ROW} FROM {{t}} WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                top,
                limit + 1,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            return Page([_row(r) for r in rows], rows[-1][0] if more else None)
        found: list[Any] = []
        deadline = time.perf_counter() + self.scan_budget_s
        low = int((await self._fetch("SELECT coalesce(min(seq), 0) FROM {t}"))[0][0])
        n = len(params)
        while top > low and len(found) <= limit:
            floor = max(low, top - self.scan_step)
            found += await self._fetch(
                f"SELECT {ROW} FROM {{t}} WHERE seq < ${n + 1} AND seq >= ${n + 2} AND "
                + " AND ".join(where)
                + f" ORDER BY seq DESC LIMIT ${n + 3}",
                *params,
                top,
                floor,
                limit + 1 - len(found),
            )
            top = floor
            if time.perf_counter() > deadline and len(found) <= limit:
                rows = found[:limit]
                return Page([_row(r) for r in rows], top if top > low else None, top)
        more = len(found) > limit
        rows = found[:limit]
        return Page([_row(r) for r in rows], rows[-1][0] if more else None)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        rows = await self._fetch(f"SELECT {ROW}, result, history FROM {{t}} WHERE uuid = $1", uuid)
        if not rows:
            return None
        *row, history = _bytes_uuid(rows[0])
        detail = detail_from_row(tuple(row))
        detail["history"] = json.loads(history) if history else []  # earlier runs
        return detail


def _bytes_uuid(row: Any) -> tuple[Any, ...]:
    """A row as the shared row builders take it: the uuid as its 16 bytes."""
    values = tuple(row)
    return (values[0], values[1].bytes, *values[2:])


def _row(row: Any) -> dict[str, Any]:
    return row_dict(_bytes_uuid(row))


def _where(filt: Filter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if filt.status:
        params.append(filt.status)
        where.append(f"status = ${len(params)}")
    if filt.name:
        params.append(filt.name)
        where.append(f"task_name = ${len(params)}")
    if filt.text:
        # names and tracebacks (case-insensitive), the uuid as text, and the arguments'
        # bytes: msgpack keeps strings as UTF-8, so a word in an argument is found too
        params += [f"%{filt.text}%", filt.text.encode()]
        like, raw = len(params) - 1, len(params)
        where.append(
            f"(task_name ILIKE ${like} OR traceback ILIKE ${like} OR uuid::text ILIKE ${like} "
            f"OR position(${raw}::bytea IN args) > 0)"
        )
    return where, params
