"""Prometheus metrics: counted in the dispatcher's process, exposed at scrape time.

    attempt ──> TaskMetrics (the app's Timing layer) ──> plain ints and bucket lists
                                                            │  (no lock, no I/O:
    scrape ──> metrics(app) ──> Collector.collect() <──────┘   the loop owns them)
                                      ├── app.executors: running, workers, crashes
                                      └── the store: queued per lane (index counts)

`TaskMetrics` is a `Timing` (it replaces the built-in one, so `app.stats()` keeps
working and no extra layer is added) that also keeps cumulative histograms of run
and wait time. It needs nothing outside the standard library; `prometheus_client`
(extra `web`) is imported only to format a scrape.

```python
app = QueueTasks(middlewares=[TaskMetrics()])
body = metrics(app)  # bytes in Prometheus' text format
```

Names (label values in braces):

| metric | type | labels |
| --- | --- | --- |
| `qtasks_mp_tasks_total` | counter | task, status (success, error, cancel) |
| `qtasks_mp_task_retries_total` | counter | task |
| `qtasks_mp_task_duration_seconds` | histogram | task (one observation per attempt) |
| `qtasks_mp_task_wait_seconds` | histogram | task (ready -> started, per attempt) |
| `qtasks_mp_tasks_queued` | gauge | lane (waiting in the store, ready or delayed) |
| `qtasks_mp_tasks_running` | gauge | lane |
| `qtasks_mp_workers` | gauge | executor (live worker processes) |
| `qtasks_mp_worker_crashes_total` | counter | executor |

Without `TaskMetrics` the counters still come from the built-in `Timing`; the two
histograms are then left out (Timing keeps only a reservoir of recent values).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import Retry, TaskCancelError
from .executors.base import Call
from .middleware.base import CallNext
from .middleware.timing import TaskTimes, Timing

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "BUCKETS_S",
    "Histogram",
    "StoreGauges",
    "TaskMetrics",
    "collector",
    "metrics",
    "metrics_async",
    "sqlite_lane_counts",
]

#: Upper bounds (seconds) of the run and wait histograms: 100 µs to 10 minutes.
BUCKETS_S: tuple[float, ...] = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)


class Histogram:
    """Counts per bucket (not cumulative) and a sum; `observe` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive: v <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


class TaskMetrics(Timing):
    """`Timing` plus per-task histograms of run and wait time, and cancels counted apart.

    Pass it in `middlewares=`: being a `Timing`, it takes the built-in one's place
    (outside `Retries`, so it sees a retry as a retry, not as the error that caused it).
    """

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_S) -> None:
        super().__init__()
        self.bounds = bounds
        self.run_hist: dict[str, Histogram] = {}
        self.wait_hist: dict[str, Histogram] = {}
        self.cancelled: dict[str, int] = {}  # part of TaskTimes.failed: ended by cancellation

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        name = call.spec.name
        times = self.tasks.get(name)
        if times is None:
            times = self.tasks[name] = TaskTimes()
            self.run_hist[name] = Histogram(self.bounds)
            self.wait_hist[name] = Histogram(self.bounds)
            self.cancelled[name] = 0
        run_hist = self.run_hist[name]
        record = call.record
        wait = record.started_at - (record.eta or record.created_at)
        wait = wait if wait > 0.0 else 0.0
        times.wait_s.append(wait)
        self.wait_hist[name].observe(wait)
        start = perf_counter()
        try:
            result = await call_next(call)
        except Retry:
            times.retried += 1
            raise
        except (asyncio.CancelledError, TaskCancelError):  # stopped, or app.cancel()
            times.count += 1
            times.failed += 1
            self.cancelled[name] += 1
            raise
        except BaseException:
            times.count += 1
            times.failed += 1
            raise
        finally:
            run = perf_counter() - start
            times.run_s.append(run)
            run_hist.observe(run)
        times.count += 1
        times.ok += 1
        return result


# ------------------------------------------------------------------ lane gauges


def sqlite_lane_counts(path: str) -> dict[str, tuple[int, int]]:
    """{lane: (queued, running)} read from a SQLite task store, on a read-only connection.

    Each count walks one of the store's partial indexes (ready, delayed, leased), so a
    scrape costs little even with a million queued tasks; the table is never scanned.
    """
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        return _lane_counts(conn)
    finally:
        conn.close()


def _lane_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for sql, i in (
        ("SELECT lane, count(*) FROM tasks WHERE status = 'new' AND eta = 0 GROUP BY lane", 0),
        ("SELECT lane, count(*) FROM tasks WHERE status = 'new' AND eta > 0 GROUP BY lane", 0),
        ("SELECT lane, count(*) FROM tasks WHERE status = 'process' GROUP BY lane", 1),
    ):
        for lane, n in conn.execute(sql):
            out.setdefault(lane, [0, 0])[i] += n
    return {lane: (q, r) for lane, (q, r) in out.items()}


def memory_lane_counts(store: Any) -> dict[str, int] | None:
    """{lane: queued} of a `MemoryStore`, from the lengths of its queues (None if unknown).

    Reads the store's private queues: it has no public per-lane count yet. `len()` of a
    list is safe to read from another thread.
    """
    ready = getattr(store, "_ready", None)
    delayed = getattr(store, "_delayed", None)
    if not isinstance(ready, dict) or not isinstance(delayed, dict):
        return None
    out: dict[str, int] = {}
    for heaps in (ready, delayed):
        for lane, heap in list(heaps.items()):
            out[lane] = out.get(lane, 0) + len(heap)
    return out


def sqlite_path(store: Any) -> str | None:
    """The file of a SQLite store, or None for a store that lives in memory."""
    path = getattr(store, "path", None)
    shared = getattr(store, "shared", False)
    return path if shared and isinstance(path, str) and os.path.exists(path) else None


def app_queued(app: Any) -> dict[str, int]:
    """{lane: queued} of an app's store (a file read for SQLite: keep it off the loop)."""
    store = getattr(app, "core", app).store
    path = sqlite_path(store)
    if path is not None:
        return {lane: q for lane, (q, _) in sqlite_lane_counts(path).items()}
    return memory_lane_counts(store) or {}


class StoreGauges:
    """Queue gauges of a store that other processes run (`qtasks-mp web --store`): a
    SQLite file read at collection, or {lane: (queued, running)} counted beforehand (a
    PostgreSQL store is read by the dashboard's async reader)."""

    def __init__(
        self, path: str | None = None, counted: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        self.path = path
        self.counted = counted

    def lanes(self) -> Mapping[str, tuple[int, int]]:
        if self.counted is not None:
            return self.counted
        return sqlite_lane_counts(self.path) if self.path is not None else {}


# ------------------------------------------------------------------ exposition


class _Collector:
    """A prometheus_client collector over an app (or a store's gauges) read at scrape."""

    def __init__(
        self,
        app: Any = None,
        store: StoreGauges | None = None,
        queued: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.queued = queued  # counted beforehand (off the loop), or None: count now

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the label values come and go

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        lanes: dict[str, list[int]] = {}
        if self.app is not None:
            yield from self._task_families(CounterMetricFamily, HistogramMetricFamily)
            executors: Mapping[str, Any] = self.app.executors
            workers = GaugeMetricFamily(
                "qtasks_mp_workers", "Live worker processes of the executor", labels=["executor"]
            )
            crashes = CounterMetricFamily(
                "qtasks_mp_worker_crashes",
                "Worker processes that died while running a call",
                labels=["executor"],
            )
            for name, executor in list(executors.items()):
                lanes.setdefault(name, [0, 0])[1] = int(executor.active)
                stats = executor.stats()
                if not isinstance(stats.get("workers"), int):  # no worker processes
                    continue
                workers.add_metric([name], float(stats["workers"]))
                crashes.add_metric([name], float(stats.get("crashes", 0)))
            yield workers
            yield crashes
            for lane, queued in self._app_queued().items():
                lanes.setdefault(lane, [0, 0])[0] = queued
        if self.store is not None:
            for lane, (queued, running) in self.store.lanes().items():
                lanes[lane] = [queued, running]
        queued_g = GaugeMetricFamily(
            "qtasks_mp_tasks_queued",
            "Tasks waiting in the store (ready or delayed)",
            labels=["lane"],
        )
        running_g = GaugeMetricFamily(
            "qtasks_mp_tasks_running", "Tasks running now", labels=["lane"]
        )
        for lane, (queued, running) in sorted(lanes.items()):
            queued_g.add_metric([lane], float(queued))
            running_g.add_metric([lane], float(running))
        yield queued_g
        yield running_g

    def _app_queued(self) -> Mapping[str, int]:
        if self.queued is not None:
            return self.queued
        return app_queued(self.app)

    def _task_families(self, counter: Any, histogram: Any) -> Iterator[Metric]:
        timing = self.app.timing
        tasks = counter("qtasks_mp_tasks", "Tasks ended, by status", labels=["task", "status"])
        retries = counter(
            "qtasks_mp_task_retries", "Attempts that ended in a retry", labels=["task"]
        )
        cancelled: dict[str, int] = getattr(timing, "cancelled", {})
        for name, t in list(timing.tasks.items()):
            n_cancel = cancelled.get(name, 0)
            tasks.add_metric([name, "success"], float(t.ok))
            tasks.add_metric([name, "error"], float(t.failed - n_cancel))
            tasks.add_metric([name, "cancel"], float(n_cancel))
            retries.add_metric([name], float(t.retried))
        yield tasks
        yield retries
        if isinstance(timing, TaskMetrics):
            for metric, hists, help_ in (
                ("qtasks_mp_task_duration_seconds", timing.run_hist, "Run time of one attempt"),
                ("qtasks_mp_task_wait_seconds", timing.wait_hist, "Ready to started, per attempt"),
            ):
                family = histogram(metric, help_, labels=["task"])
                for name, h in list(hists.items()):
                    family.add_metric([name], h.cumulative(), h.sum)
                yield family


def collector(
    app: Any = None,
    *,
    store_path: str | None = None,
    queued: Mapping[str, int] | None = None,
    lanes: Mapping[str, tuple[int, int]] | None = None,
) -> Any:
    """A prometheus_client collector: register it in your own `CollectorRegistry`.

    `queued`: {lane: count} counted beforehand (see `metrics_async`); None counts them
    at collection. `store_path` (a SQLite file) or `lanes` ({lane: (queued, running)}
    counted beforehand): the gauges of a store that other processes run."""
    store = None
    if store_path is not None or lanes is not None:
        store = StoreGauges(store_path, lanes)
    return _Collector(getattr(app, "core", app), store, queued)


def metrics(
    app: Any = None,
    *,
    store_path: str | None = None,
    queued: Mapping[str, int] | None = None,
    lanes: Mapping[str, tuple[int, int]] | None = None,
) -> bytes:
    """The app's metrics (or a store's queue gauges) in Prometheus' text format.

    Call it in the app's loop, or from a thread of a sync program (a Flask view): it
    reads counters and executor figures that the loop owns. With a SQLite store it
    reads the file (index counts, milliseconds even for a million queued tasks); in a
    coroutine prefer `await metrics_async(app)`, which does that part in a thread.
    Raises ImportError naming the extra when prometheus_client is not installed.
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError as e:
        raise ImportError("metrics need prometheus_client: pip install 'qtasks-mp[web]'") from e
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(app, store_path=store_path, queued=queued, lanes=lanes))
    body: bytes = generate_latest(registry)
    return body


async def metrics_async(app: Any) -> bytes:
    """`metrics(app)` for a coroutine in the app's loop: the store is read in a thread."""
    queued: Mapping[str, int] | None = None
    if sqlite_path(getattr(app, "core", app).store) is not None:
        queued = await asyncio.to_thread(app_queued, app)
    return metrics(app, queued=queued)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
