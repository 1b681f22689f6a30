"""Where the dashboard reads: a running app in this process, or a SQLite file.

    AppSource(app)          the app's own loop: stats(), executors, the store
      └─ SQLiteReader       if the app's store is a SQLite file (same reads as below)
      └─ MemoryReader       if it is the memory store (its records, read in the loop)
    StoreSource(path)       `qtasks-mp web --store tasks.db`: a file other processes run
      └─ SQLiteReader       its own read-only connection, in one thread of its own

The reader never writes: a dashboard left open cannot lock the store or take a task.
The one write, purging finished tasks, goes through the store's own `purge()`.

Paging is by keyset on `seq` (the store's rowid: arrival order), newest first, so a
page costs the same at the millionth row as at the first. A filter that matches few
rows cannot make it scan the table: each request walks at most `SCAN_BUDGET_S` of
rows back and then returns what it found with a cursor to go on from there.
"""

from __future__ import annotations

import asyncio
import os
import pprint
import reprlib
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID

from ..metrics import memory_lane_counts
from ..task import TaskStatus

T = TypeVar("T")

STATUSES = tuple(s.value for s in TaskStatus)
FINISHED = ("success", "error", "cancel")
SCAN_BUDGET_S = 0.05  # per page request, when a filter is sparse
SCAN_STEP = 20_000  # rowids per walked window
SERIES_BUCKET_S = 10
SERIES_SPAN_S = 600  # the throughput chart: the last 10 minutes

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = 6


def short_repr(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [_short.repr(a) for a in args] + [f"{k}={_short.repr(v)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def long_repr(value: Any, limit: int = 65_536) -> str:
    text = pprint.pformat(value, width=100, compact=True)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more)"


@dataclass
class Filter:
    status: str | None = None
    name: str | None = None
    text: str | None = None


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_before: int | None  # cursor for older rows; None: nothing older
    scanned_to: int | None = None  # set when the budget ran out before the page filled


@dataclass
class Overview:
    counts: dict[str, int] | None  # by status; None while a big store is being counted
    by_task: list[dict[str, Any]] | None  # task, lane, and a count per status
    lanes: list[dict[str, Any]]  # lane, queued, running, slots
    timing: list[dict[str, Any]]  # task, run/wait p50/p95 (seconds or None)
    series: list[tuple[float, int, int]] | None  # (bucket start, done, failed)
    done_per_s: float
    failed_per_s: float
    timing_note: str
    cost_s: float = 0.0
    counted_cost_s: float = 0.0  # the last background count of the whole store
    count_error: str | None = None
    as_of: float = field(default_factory=time.time)


# ------------------------------------------------------------------ helpers


def percentile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


class Throughput:
    """Finished and failed per bucket, from cumulative counters sampled once a second."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=SERIES_SPAN_S + 5)

    def sample(self, now: float, done: int, failed: int) -> None:
        if not self.samples or now - self.samples[-1][0] >= 0.9:
            self.samples.append((now, done, failed))

    def series(self, now: float) -> list[tuple[float, int, int]]:
        start = (now // SERIES_BUCKET_S) * SERIES_BUCKET_S - SERIES_SPAN_S + SERIES_BUCKET_S
        buckets = {start + i * SERIES_BUCKET_S: [0, 0] for i in range(SERIES_SPAN_S // 10)}
        prev = None
        for t, done, failed in self.samples:
            if prev is not None and t >= start:
                key = start + ((t - start) // SERIES_BUCKET_S) * SERIES_BUCKET_S
                if key in buckets:
                    buckets[key][0] += max(0, done - prev[1])
                    buckets[key][1] += max(0, failed - prev[2])
            prev = (t, done, failed)
        return [(t, d, f) for t, (d, f) in sorted(buckets.items())]

    def rates(self, now: float, window_s: float = 60.0) -> tuple[float, float]:
        recent = [s for s in self.samples if s[0] >= now - window_s]
        if len(recent) < 2:
            return 0.0, 0.0
        dt = recent[-1][0] - recent[0][0]
        return (recent[-1][1] - recent[0][1]) / dt, (recent[-1][2] - recent[0][2]) / dt


class Refreshed:
    """A slow value (counting a big table) refreshed in the background, never awaited
    for long: readers get the last value at once (None until the first is ready) and a
    stale one starts a refresh. It is recomputed at most every `max(min_age_s, 20 *
    cost)`, so a count that takes 1 s runs at most every 20 s: about 5% of one core
    however many pages are open. `generation` counts the values that differed.
    """

    def __init__(self, compute: Callable[[], Awaitable[Any]], min_age_s: float = 2.0) -> None:
        self.compute = compute
        self.min_age_s = min_age_s
        self.value: Any = None
        self.generation = 0
        self.at = 0.0
        self.cost_s = 0.0
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def stale(self) -> bool:
        age = time.monotonic() - self.at
        return self.value is None or age >= max(self.min_age_s, 20 * self.cost_s)

    async def get(self, wait_s: float = 0.25) -> Any:
        if self.stale() and self._task is None:
            self._task = asyncio.create_task(self._refresh())
        if self.value is None and self._task is not None:
            await asyncio.wait([self._task], timeout=wait_s)
        return self.value

    async def _refresh(self) -> None:
        start = time.perf_counter()
        try:
            value = await self.compute()
            if value != self.value:  # a new generation only when something changed
                self.generation += 1
            self.value = value
            self.error = None
        except Exception as e:  # shown on the page; the next request tries again
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.cost_s = time.perf_counter() - start
            self.at = time.monotonic()
            self._task = None

    async def aclose(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------ SQLite


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
            return _detail_from_sqlite(row)

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
    return _with_timings(detail)


def _with_timings(d: dict[str, Any]) -> dict[str, Any]:
    started, finished = d["started_at"], d["finished_at"]
    d["attempts"] = d["retry"] + (1 if started else 0)
    d["wait_s"] = max(0.0, started - (d["eta"] or d["created_at"])) if started else None
    d["run_s"] = finished - started if started and finished else None
    # Issue 13 (progress) will add d["progress"] = (done, total, note) here; the task
    # page has its place ready (see templates/task.html, block "progress").
    d["progress"] = None
    return d


def summarise_rows(
    rows: Iterable[tuple[str, str, float, float, float, float]],
) -> list[dict[str, Any]]:
    """p50/p95 run and wait per task from (name, status, created, eta, started, finished)."""
    runs: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    for name, _status, created, eta, started, finished in rows:
        if started > 0:
            waits.setdefault(name, []).append(max(0.0, started - (eta or created)))
            if finished > 0:
                runs.setdefault(name, []).append(finished - started)
    out = []
    for name in sorted(set(runs) | set(waits)):
        r, w = sorted(runs.get(name, [])), sorted(waits.get(name, []))
        out.append(
            {
                "task": name,
                "run_p50_s": percentile(r, 0.5),
                "run_p95_s": percentile(r, 0.95),
                "wait_p50_s": percentile(w, 0.5),
                "wait_p95_s": percentile(w, 0.95),
            }
        )
    return out


def group_counts(
    rows: Iterable[tuple[str, str, str, int]],
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts = dict.fromkeys(STATUSES, 0)
    by_task: dict[tuple[str, str], dict[str, Any]] = {}
    for name, lane, status, n in rows:
        counts[status] = counts.get(status, 0) + n
        entry = by_task.setdefault(
            (name, lane), {"task": name, "lane": lane, **dict.fromkeys(STATUSES, 0)}
        )
        entry[status] = entry.get(status, 0) + n
    return counts, [by_task[k] for k in sorted(by_task)]


# ------------------------------------------------------------------ sources


class Source:
    """What every page reads. `workers()` / `timers()` are empty for a store alone."""

    title = "qtasks_mp"
    in_process = False

    def __init__(self, reader: SQLiteReader | None) -> None:
        self.reader = reader
        # Counting every row by task and status: in the background (see Refreshed), on
        # a connection and thread of its own, so pages never queue behind it.
        self._slow = SQLiteReader(reader.path) if reader is not None else None
        self.counted = Refreshed(self._count) if reader is not None else None

    @property
    def can_purge(self) -> bool:
        return self.reader is not None

    async def _count(self) -> tuple[dict[str, int], list[dict[str, Any]], list[Any] | None]:
        assert self._slow is not None
        counts, by_task = group_counts(await self._slow.counts())
        return counts, by_task, await self._slow.finished_series(time.time())

    async def version(self) -> Any:
        raise NotImplementedError

    async def overview(self) -> Overview:
        raise NotImplementedError

    async def page(self, filt: Filter, before: int | None, limit: int) -> Page:
        assert self.reader is not None
        return await self.reader.page(filt, before, limit)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        assert self.reader is not None
        return await self.reader.task(uuid)

    async def names(self) -> list[str]:
        counted = self.counted.value if self.counted is not None else None
        return sorted({t["task"] for t in counted[1]}) if counted else []

    def workers(self) -> list[dict[str, Any]]:
        return []

    def timers(self) -> list[dict[str, Any]]:
        return []

    async def purge(self, statuses: list[str], older_than_s: float) -> int:
        raise NotImplementedError

    async def metrics(self) -> bytes:
        raise NotImplementedError

    def tick(self) -> None:
        """Called once a second by the event stream: sample what needs sampling."""

    async def aclose(self) -> None:
        if self.counted is not None:
            await self.counted.aclose()
        loop = asyncio.get_running_loop()
        for reader in (self.reader, self._slow):
            if reader is not None:
                await loop.run_in_executor(None, reader.close)


def _lanes(lanes: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {"lane": k, "queued": q, "running": r, "slots": None} for k, (q, r) in sorted(lanes.items())
    ]


class StoreSource(Source):
    """A SQLite file that other processes run: counts and timings from its rows."""

    def __init__(self, path: str) -> None:
        super().__init__(SQLiteReader(path))
        self.path = path
        self.title = os.path.basename(path)

    async def version(self) -> Any:
        assert self.reader is not None and self.counted is not None
        return (await self.reader.data_version(), self.counted.generation)

    async def overview(self) -> Overview:
        assert self.reader is not None and self.counted is not None
        start = time.perf_counter()
        now = time.time()
        lanes, done, recent = await self.reader.quick(now)
        counted = await self.counted.get()
        failed = sum(1 for r in recent if r[5] >= now - 60 and r[1] == "error")
        in_minute = sum(1 for r in recent if r[5] >= now - 60)
        failed_share = failed / in_minute if in_minute else 0.0
        return Overview(
            counts=counted[0] if counted else None,
            by_task=counted[1] if counted else None,
            lanes=_lanes(lanes),
            timing=summarise_rows(recent),
            series=counted[2] if counted else None,
            done_per_s=done / 60,
            failed_per_s=done * failed_share / 60,
            timing_note=f"the newest {len(recent)} tasks finished in the last 5 minutes",
            cost_s=time.perf_counter() - start,
            counted_cost_s=self.counted.cost_s,
            count_error=self.counted.error,
        )

    async def purge(self, statuses: list[str], older_than_s: float) -> int:
        from ..config import QueueConfig
        from ..stores.sqlite import SQLiteStore

        store = SQLiteStore(self.path)
        config = QueueConfig()
        config.result_retention_count = 2**62  # opening to purge must not trim anything else
        config.result_retention_s = float(2**62)
        await store.open(config, lambda: None)
        try:
            return await store.purge(statuses, older_than_s)
        finally:
            await store.close()

    async def metrics(self) -> bytes:
        from ..metrics import metrics

        return await asyncio.to_thread(partial(metrics, store_path=self.path))


class AppSource(Source):
    """An app running in this process (`serve_dashboard(app)`), in the app's loop."""

    in_process = True

    def __init__(self, app: Any, timers: Iterable[Any] = ()) -> None:
        core = getattr(app, "core", app)
        store = core.store
        path = getattr(store, "path", None)
        shared = getattr(store, "shared", False)
        super().__init__(SQLiteReader(path) if shared and isinstance(path, str) else None)
        self.app = core
        self.title = core.name
        if self.counted is None:  # the memory store: counted in the background too
            self.counted = Refreshed(self._count_memory, min_age_s=1.0)
        self._timers = list(timers)
        self.throughput = Throughput()
        self._cpu: dict[int, Any] = {}  # psutil.Process per worker pid, for cpu_percent

    @property
    def can_purge(self) -> bool:
        return self.reader is not None and hasattr(self.app.store, "purge")

    async def _count_memory(self) -> tuple[dict[str, int], list[dict[str, Any]], None]:
        # list() of the dict's values is one C call (no other code runs meanwhile, so
        # the loop's changes cannot break it); the counting runs in a thread, on
        # records whose `status` the loop may change under it: a count of a moment.
        records = getattr(self.app.store, "_records", None)
        snapshot = list(records.values()) if isinstance(records, dict) else []
        rows = await asyncio.to_thread(_memory_counts, snapshot)
        counts, by_task = group_counts(rows)
        return counts, by_task, None

    def _totals(self) -> tuple[int, int]:
        done = failed = 0
        for t in list(self.app.timing.tasks.values()):
            done += t.count
            failed += t.failed
        return done, failed

    def tick(self) -> None:
        done, failed = self._totals()
        self.throughput.sample(time.time(), done, failed)

    async def version(self) -> Any:
        stats = self.app.stats()
        done, failed = self._totals()
        sqlite = await self.reader.data_version() if self.reader is not None else 0
        generation = self.counted.generation if self.counted is not None else 0
        return (stats["unfinished"], stats["active"], done, failed, sqlite, generation)

    async def overview(self) -> Overview:
        start = time.perf_counter()
        now = time.time()
        app = self.app
        counts: dict[str, int] | None
        by_task: list[dict[str, Any]] | None
        assert self.counted is not None
        counted = await self.counted.get()
        counts, by_task = (counted[0], counted[1]) if counted else (None, None)
        if self.reader is not None:
            queued = {k: q for k, (q, _) in (await self.reader.quick(now))[0].items()}
        else:
            queued = memory_lane_counts(app.store) or {}
        lanes = [
            {"lane": k, "queued": queued.get(k, 0), "running": e.active, "slots": e.slots}
            for k, e in app.executors.items()
        ]
        timing = [{"task": k, **v} for k, v in app.stats()["tasks"].items()]
        done_s, failed_s = self.throughput.rates(now)
        return Overview(
            counts=counts,
            by_task=by_task,
            lanes=lanes,
            timing=timing,
            series=self.throughput.series(now),
            done_per_s=done_s,
            failed_per_s=failed_s,
            timing_note="the last 2,048 attempts of each task (app.stats())",
            cost_s=time.perf_counter() - start,
            counted_cost_s=self.counted.cost_s,
            count_error=self.counted.error,
        )

    async def page(self, filt: Filter, before: int | None, limit: int) -> Page:
        if self.reader is not None:
            return await self.reader.page(filt, before, limit)
        return _memory_page(self.app.store, filt, before, limit)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        if self.reader is not None:
            return await self.reader.task(uuid)
        record = await self.app.store.get(uuid)
        return None if record is None else _detail_from_record(record)

    async def names(self) -> list[str]:
        return sorted(self.app.specs)

    def workers(self) -> list[dict[str, Any]]:
        import psutil

        out = []
        for name, executor in self.app.executors.items():
            stats = executor.stats()
            per_worker = stats.get("per_worker") or {}
            rows = []
            for pid, w in per_worker.items():
                proc = self._cpu.get(pid)
                cpu = None
                try:
                    if proc is None:
                        proc = self._cpu[pid] = psutil.Process(pid)
                        proc.cpu_percent()  # the first call starts the measurement
                    else:
                        cpu = proc.cpu_percent()
                except psutil.Error:
                    self._cpu.pop(pid, None)
                rows.append({"pid": pid, "cpu_percent": cpu, **w})
            for pid in set(self._cpu) - set(per_worker):
                del self._cpu[pid]
            autoscale = stats.get("autoscale") or {}
            # decisions carry the autoscaler's clock (monotonic by default): as wall time
            shift = time.time() - time.monotonic()
            decisions = [{**d, "time": d["time"] + shift} for d in autoscale.get("history") or []]
            out.append(
                {
                    "name": name,
                    "kind": type(executor).__name__,
                    "stats": {
                        k: v
                        for k, v in stats.items()
                        if k not in ("per_worker", "autoscale", "pids")
                    },
                    "workers": rows,
                    "decisions": decisions[::-1][:30],
                    "last_sample": autoscale.get("last"),
                }
            )
        return out

    def timers(self) -> list[dict[str, Any]]:
        out = []
        for timer in self._timers:
            for job in timer.scheduler.get_jobs():
                out.append(
                    {
                        "name": job.name,
                        "trigger": str(job.trigger),
                        "next": getattr(job, "next_run_time", None),
                    }
                )
        return out

    async def purge(self, statuses: list[str], older_than_s: float) -> int:
        count: int = await self.app.store.purge(statuses, older_than_s)
        return count

    async def metrics(self) -> bytes:
        from ..metrics import metrics_async

        return await metrics_async(self.app)  # in the loop, which owns what it reads


# ------------------------------------------------------------------ memory store


def _memory_counts(records: list[Any]) -> list[tuple[str, str, str, int]]:
    tally: dict[tuple[str, str, str], int] = {}
    for r in records:
        key = (r.task_name, r.lane, str(r.status))
        tally[key] = tally.get(key, 0) + 1
    return [(*k, n) for k, n in tally.items()]


def _record_dict(r: Any) -> dict[str, Any]:
    tb = r.traceback
    return {
        "seq": r.seq,
        "uuid": str(r.uuid),
        "task_name": r.task_name,
        "lane": r.lane,
        "status": str(r.status),
        "priority": r.priority,
        "retry": r.retry,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "eta": r.eta,
        "args": short_repr(r.args, r.kwargs),
        "error": tb.strip().splitlines()[-1] if tb else "",
    }


def _matches(r: Any, filt: Filter) -> bool:
    if filt.status and str(r.status) != filt.status:
        return False
    if filt.name and r.task_name != filt.name:
        return False
    if filt.text:
        needle = filt.text.lower()
        hay = f"{r.task_name} {r.uuid} {r.traceback or ''} {r.args!r} {r.kwargs!r}".lower()
        return needle in hay
    return True


MEMORY_SCAN_BUDGET_S = 0.01  # the memory store is read in the loop: keep each page short


def _memory_page(store: Any, filt: Filter, before: int | None, limit: int) -> Page:
    """Newest first by arrival (the records' insertion order; a retried task keeps its
    place). Runs in the loop without awaiting, so the dict cannot change under it; a
    sparse filter stops after `MEMORY_SCAN_BUDGET_S` with a cursor to go on from."""
    records = getattr(store, "_records", None)
    if not isinstance(records, dict):
        return Page([], None)
    out: list[Any] = []
    deadline = time.perf_counter() + MEMORY_SCAN_BUDGET_S
    last_seen: int | None = None
    for n, r in enumerate(reversed(records.values())):
        if before is not None and r.seq >= before:
            continue
        last_seen = r.seq
        if _matches(r, filt):
            out.append(r)
            if len(out) > limit:
                break
        if n % 512 == 511 and time.perf_counter() > deadline:
            rows = out[:limit]
            return Page([_record_dict(r) for r in rows], last_seen, last_seen)
    more = len(out) > limit
    out = out[:limit]
    return Page([_record_dict(r) for r in out], out[-1].seq if more else None)


def _detail_from_record(r: Any) -> dict[str, Any]:
    d = _record_dict(r)
    d["args_full"] = long_repr(r.args)
    d["kwargs_full"] = long_repr(r.kwargs)
    d["result"] = long_repr(r.returning)
    d["traceback"] = r.traceback
    return _with_timings(d)
