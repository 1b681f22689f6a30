"""Where the dashboard reads: a running app in this process, or a store other processes run.

    AppSource(app)          the app's own loop: stats(), executors, the store
      └─ a Reader           if the app's store is a SQLite file or a PostgreSQL database
      └─ memory_reader.py   if it is the memory store (its records, read in the loop)
    StoreSource(store)      `qtasks-mp web --store tasks.db | postgresql://...`
      └─ a Reader           SQLiteReader: a read-only connection in a thread of its own;
                            PostgresReader: a read-only asyncpg pool of its own

The readers never write: a dashboard left open cannot lock the store or take a task.
The writes (purging finished tasks, cancel, requeue) go through the store's own
`purge()` and the app's `cancel()` / `requeue()` (for a file alone: a stopped app over
it, which runs nothing).
Counting a whole store runs in the background (`Refreshed`), never in a request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID

from ..metrics import memory_lane_counts
from .memory_reader import detail_from_record, memory_counts, memory_page
from .postgres_reader import PostgresReader
from .records import (
    FINISHED,
    SERIES_BUCKET_S,
    SERIES_SPAN_S,
    STATUSES,
    Filter,
    Overview,
    Page,
    group_counts,
    summarise_rows,
)
from .sqlite_reader import SQLiteReader

__all__ = [
    "FINISHED",
    "STATUSES",
    "AppSource",
    "Filter",
    "Overview",
    "Page",
    "Reader",
    "Refreshed",
    "Source",
    "StoreSource",
    "Throughput",
]


class Reader(Protocol):
    """The questions a page asks of a SQL store (sqlite_reader.py, postgres_reader.py)."""

    def twin(self) -> Reader: ...
    async def aclose(self) -> None: ...
    async def data_version(self) -> int: ...
    async def lane_counts(self) -> dict[str, tuple[int, int]]: ...
    async def counts(self) -> list[tuple[str, str, str, int]]: ...
    async def finished_series(self, now: float) -> list[tuple[float, int, int]]: ...
    async def quick(self, now: float) -> tuple[dict[str, tuple[int, int]], int, list[Any]]: ...
    async def page(self, filt: Filter, before: int | None, limit: int) -> Page: ...
    async def task(self, uuid: UUID) -> dict[str, Any] | None: ...


def is_postgres(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def reader_for(store: str, schema: str | None = None) -> Reader:
    """The reader of a SQLite file (a path) or a PostgreSQL database (a URL)."""
    if is_postgres(store):
        return PostgresReader(store, schema)
    return SQLiteReader(store)


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


# ------------------------------------------------------------------ sources


class Source:
    """What every page reads. `workers()` / `timers()` are empty for a store alone."""

    title = "qtasks_mp"
    in_process = False

    def __init__(self, reader: Reader | None) -> None:
        self.reader = reader
        # Counting every row by task and status: in the background (see Refreshed), on
        # a connection of its own, so pages never queue behind it.
        self._slow = reader.twin() if reader is not None else None
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

    async def cancel(self, uuid: UUID) -> bool:
        """`app.cancel(uuid)`: raises `TaskNotFound` for an unknown id."""
        raise NotImplementedError

    async def requeue(self, uuid: UUID) -> None:
        """`app.requeue(uuid)`: raises `TaskNotFound`, or `ArgumentValueError` for a
        task that did not end error or cancel."""
        raise NotImplementedError

    async def metrics(self) -> bytes:
        raise NotImplementedError

    def tick(self) -> None:
        """Called once a second by the event stream: sample what needs sampling."""

    async def aclose(self) -> None:
        if self.counted is not None:
            await self.counted.aclose()
        for reader in {id(r): r for r in (self.reader, self._slow) if r is not None}.values():
            await reader.aclose()


def _lanes(lanes: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {"lane": k, "queued": q, "running": r, "slots": None} for k, (q, r) in sorted(lanes.items())
    ]


class StoreSource(Source):
    """A store that other processes run, a SQLite file (a path) or a PostgreSQL database
    (a URL): counts and timings from its rows."""

    def __init__(self, store: str, schema: str | None = None) -> None:
        super().__init__(reader_for(store, schema))
        self.store = store
        self.schema = schema
        if is_postgres(store):
            self.title = urlsplit(store).path.lstrip("/") or "postgresql"  # the database
        else:
            self.title = os.path.basename(store)

    async def check(self) -> None:
        """Raise what is wrong with the store (PostgreSQL: connect and find the table)."""
        if isinstance(self.reader, PostgresReader):
            await self.reader.check()

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

    def _store(self) -> tuple[Any, Any]:
        """A store object over the same data (not opened), for the actions: opening it
        must not trim anything."""
        from ..config import QueueConfig

        store: Any
        if is_postgres(self.store):
            from ..stores.postgres import PostgresStore

            store = PostgresStore(self.store, schema=self.schema)
        else:
            from ..stores.sqlite import SQLiteStore

            store = SQLiteStore(self.store)
        config = QueueConfig()
        config.result_retention_count = 2**62
        config.result_retention_s = float(2**62)
        return store, config

    async def purge(self, statuses: list[str], older_than_s: float) -> int:
        store, config = self._store()
        await store.open(config, lambda: None)
        try:
            count: int = await store.purge(statuses, older_than_s)
            return count
        finally:
            await store.close()

    async def cancel(self, uuid: UUID) -> bool:
        cancelled: bool = await self._with_app(lambda app: app.cancel(uuid))
        return cancelled

    async def requeue(self, uuid: UUID) -> None:
        await self._with_app(lambda app: app.requeue(uuid))

    async def _with_app(self, job: Callable[[Any], Awaitable[Any]]) -> Any:
        """`job(app)` on a stopped app over the store: it runs nothing, asks the store,
        and waits on it for the process that runs the task (a cancel)."""
        from ..app import AppCore

        store, config = self._store()
        try:
            return await job(AppCore("qtasks-mp web", store=store, config=config))
        finally:
            await store.close()

    async def metrics(self) -> bytes:
        from ..metrics import metrics

        assert self.reader is not None
        return metrics(lanes=await self.reader.lane_counts())


class AppSource(Source):
    """An app running in this process (`serve_dashboard(app)`), in the app's loop."""

    in_process = True

    def __init__(self, app: Any, timers: Iterable[Any] = ()) -> None:
        core = getattr(app, "core", app)
        super().__init__(_app_reader(core.store))
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
        rows = await asyncio.to_thread(memory_counts, snapshot)
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
        return memory_page(self.app.store, filt, before, limit)

    async def task(self, uuid: UUID) -> dict[str, Any] | None:
        if self.reader is not None:
            return await self.reader.task(uuid)
        record = await self.app.store.get(uuid)
        return None if record is None else detail_from_record(record)

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

    async def cancel(self, uuid: UUID) -> bool:
        cancelled: bool = await self.app.cancel(uuid)
        return cancelled

    async def requeue(self, uuid: UUID) -> None:
        await self.app.requeue(uuid)

    async def purge(self, statuses: list[str], older_than_s: float) -> int:
        count: int = await self.app.store.purge(statuses, older_than_s)
        return count

    async def metrics(self) -> bytes:
        from ..metrics import metrics

        queued = None
        if self.reader is not None:  # read here: a SQL store's counts are not the loop's
            queued = {lane: q for lane, (q, _) in (await self.reader.lane_counts()).items()}
        return metrics(self.app, queued=queued)  # in the loop, which owns what it reads


def _app_reader(store: Any) -> Reader | None:
    """A reader of an app's store, if it is a SQL store (else the pages read the app)."""
    if not getattr(store, "shared", False):
        return None
    url = getattr(store, "url", None)
    if isinstance(url, str) and is_postgres(url):
        return PostgresReader(url, getattr(store, "schema", None))
    path = getattr(store, "path", None)
    return SQLiteReader(path) if isinstance(path, str) else None
