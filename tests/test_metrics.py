"""Prometheus metrics: parsed with prometheus_client's own parser, checked against stats()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.metrics import (
    BUCKETS_S,
    Histogram,
    TaskMetrics,
    metrics,
    metrics_async,
    sqlite_lane_counts,
)


def parse(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of every sample in the text."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def mapp() -> AsyncIterator[QueueTasks]:
    application = QueueTasks("metrics", middlewares=[TaskMetrics()])
    application.config.shutdown_timeout = 2.0
    yield application
    await application.stop()


def test_histogram_buckets_are_inclusive_and_cumulative() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert h.sum == pytest.approx(8.65)


async def test_counters_match_stats_after_a_mixed_run(mapp: QueueTasks) -> None:
    calls = {"flaky": 0}

    @mapp.task(name="ok")
    async def ok(x: int) -> int:
        return x

    @mapp.task(name="boom")
    def boom() -> None:  # a thread task
        raise ValueError("boom")

    @mapp.task(name="flaky", retry=3, retry_on_exc=[ConnectionError])
    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise ConnectionError("down")
        return "up"

    assert isinstance(mapp.timing, TaskMetrics)  # it took the built-in Timing's place
    await mapp.start()
    for i in range(7):
        await mapp.add_task("ok", i)
    for _ in range(3):
        await mapp.add_task("boom")
    done = await mapp.add_task("flaky", timeout=5)
    assert done is not None and done.status == "success"
    await mapp.wait_idle()

    samples = parse(metrics(mapp))
    stats = mapp.stats()["tasks"]
    for name in ("ok", "boom", "flaky"):
        task = (("status", "success"), ("task", name))
        error = (("status", "error"), ("task", name))
        assert samples[("qtasks_mp_tasks_total", task)] == stats[name]["ok"]
        assert samples[("qtasks_mp_tasks_total", error)] == stats[name]["failed"]
        retries = samples[("qtasks_mp_task_retries_total", (("task", name),))]
        assert retries == stats[name]["retried"]
        attempts = stats[name]["count"] + stats[name]["retried"]
        by_task = (("task", name),)
        assert samples[("qtasks_mp_task_duration_seconds_count", by_task)] == attempts
        assert samples[("qtasks_mp_task_wait_seconds_count", by_task)] == attempts
        inf = (("le", "+Inf"), ("task", name))
        assert samples[("qtasks_mp_task_duration_seconds_bucket", inf)] == attempts
    assert (stats["ok"]["ok"], stats["boom"]["failed"], stats["flaky"]["retried"]) == (7, 3, 2)
    for lane in ("inline", "thread"):
        assert samples[("qtasks_mp_tasks_running", (("lane", lane),))] == 0
    assert len(BUCKETS_S) + 1 == sum(
        1
        for key in samples
        if key[0] == "qtasks_mp_task_duration_seconds_bucket" and ("task", "ok") in key[1]
    )


async def test_queued_and_running_gauges_while_tasks_wait(
    mapp: QueueTasks, gate: asyncio.Event
) -> None:
    started = asyncio.Event()

    @mapp.task(name="hold")
    async def hold() -> None:
        started.set()
        await gate.wait()

    mapp.config.max_tasks_process = 1  # the inline lane runs one at a time
    await mapp.start()
    for _ in range(4):
        await mapp.add_task("hold")
    await asyncio.wait_for(started.wait(), 5)
    samples = parse(metrics(mapp))
    assert samples[("qtasks_mp_tasks_running", (("lane", "inline"),))] == 1
    assert samples[("qtasks_mp_tasks_queued", (("lane", "inline"),))] == 3
    gate.set()
    await mapp.wait_idle()


async def test_plain_timing_gives_counters_without_histograms(app: QueueTasks) -> None:
    @app.task(name="ok")
    async def ok() -> None:
        pass

    await app.start()
    await app.add_task("ok", timeout=5)
    samples = parse(metrics(app))
    assert samples[("qtasks_mp_tasks_total", (("status", "success"), ("task", "ok")))] == 1
    assert not any(k[0].startswith("qtasks_mp_task_duration") for k in samples)


async def test_sqlite_store_gauges_read_from_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    app = QueueTasks("producer", store=path)

    @app.task(name="later")
    async def later() -> None:
        pass

    for _ in range(5):  # added while the app is stopped: they wait in the file
        await app.add_task("later")
    try:
        assert sqlite_lane_counts(path) == {"inline": (5, 0)}
        samples = parse(metrics(store_path=path))
        assert samples[("qtasks_mp_tasks_queued", (("lane", "inline"),))] == 5
        assert samples[("qtasks_mp_tasks_running", (("lane", "inline"),))] == 0
    finally:
        await app.store.close()


async def test_metrics_async_counts_a_sqlite_store_off_the_loop(tmp_path: Path) -> None:
    app = QueueTasks("file", store=str(tmp_path / "tasks.db"), middlewares=[TaskMetrics()])

    @app.task(name="later")
    async def later() -> None:
        pass

    for _ in range(3):
        await app.add_task("later")
    try:
        samples = parse(await metrics_async(app))
        assert samples[("qtasks_mp_tasks_queued", (("lane", "inline"),))] == 3
    finally:
        await app.store.close()
