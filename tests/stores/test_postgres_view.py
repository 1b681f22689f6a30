"""The live view over a PostgreSQL store: `qtasks-mp web` and `top` as real processes, the
reader's paging and search, an in-process dashboard of an app on PostgreSQL.

The server is the session's throw-away cluster (conftest.py); each test has its own database.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from uuid import uuid4

import pytest
from pg_support import Cluster
from prometheus_client.parser import text_string_to_metric_families

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.task import Task
from qtasks_mp.web.postgres_reader import PostgresReader
from qtasks_mp.web.records import Filter
from qtasks_mp.web.source import AppSource, StoreSource


def make_app(url: str) -> QueueTasks:
    app = QueueTasks("pgview", store=url)
    app.config.shutdown_timeout = 2.0

    @app.task(name="send")
    async def send(text: str) -> str:
        return text

    @app.task(name="boom")
    async def boom(text: str) -> None:
        raise ValueError(f"refused {text}")

    return app


async def filled(url: str) -> tuple[Task, Task]:
    """One success with a <script> argument, one error, and two tasks left queued."""
    app = make_app(url)
    async with app:
        ok = await app.add_task("send", "<script>x</script>", timeout=10)
        failed = await app.add_task("boom", "invoice-77", timeout=10)
    await app.add_task("send", "waiting")  # stopped: it waits in the database
    await app.add_task("send", "waiting too")
    await app.store.close()
    assert ok is not None and failed is not None and failed.status == "error"
    return ok, failed


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


async def get(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, url)


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }


async def test_qtasks_mp_web_serves_a_postgres_store_another_process_runs(pg_url: str) -> None:
    ok, failed = await filled(pg_url)
    secret_url = pg_url.replace("qtasks@", "qtasks:hunter2@")  # trust auth: ignored
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "qtasks_mp.web", "--store", secret_url, "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "QTASKS_MP_WEB_TOKEN": ""},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = re.search(r"serving (http://\S+/)", line)
        if found is None:
            pytest.fail(f"no address printed: {line!r} {(await proc.stderr.read()).decode()}")
        assert "hunter2" not in line and "***" in line
        base = found.group(1)
        status, tasks = await get(base + "tasks")
        assert status == 200 and "&lt;script&gt;x&lt;/script&gt;" in tasks
        assert "<script>x</script>" not in tasks
        _, errors = await get(base + "tasks?status=error")
        assert str(failed.uuid) in errors and str(ok.uuid) not in errors
        _, searched = await get(base + "tasks?q=invoice-77")
        assert str(failed.uuid) in searched and str(ok.uuid) not in searched
        _, page = await get(base + f"tasks/{failed.uuid}")
        assert "ValueError: refused invoice-77" in page
        _, overview = await get(base)
        assert "send" in overview and "boom" in overview
        _, body = await get(base + "metrics")
        assert samples(body)[("qtasks_mp_tasks_queued", (("lane", "inline"),))] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_top_prints_a_postgres_store_once(pg_url: str) -> None:
    await filled(pg_url)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "qtasks_mp.top", "--store", pg_url, "--once"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "refused invoice-77" in text  # a recent failure
    assert re.search(r"inline\W+2\b", text), text  # two queued on the lane


async def test_a_store_that_cannot_be_read_is_one_line_naming_it(pg_cluster: Cluster) -> None:
    url = pg_cluster.url(database="nowhere").replace("qtasks@", "qtasks:hunter2@")
    for command in (["qtasks_mp.web", "--port", "0"], ["qtasks_mp.top", "--once"]):
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", *command, "--store", url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        message = err.decode()
        assert proc.returncode == 2, message
        assert "cannot read the task store" in message and "nowhere" in message
        assert "hunter2" not in message


async def test_pages_walk_back_by_seq_and_a_sparse_filter_stays_in_budget(pg_url: str) -> None:
    app = make_app(pg_url)
    await app.add_task("boom", "rare")
    for i in range(30):
        await app.add_task("send", f"common {i}")
    await app.store.close()
    # one window of 10 rows per request: the lone match is found a few requests back
    reader = PostgresReader(pg_url, scan_step=10, scan_budget_s=0.0)
    try:
        page = await reader.page(Filter(name="boom"), None, 50)
        assert page.rows == [] and page.scanned_to == page.next_before
        seen, before, requests = [], page.next_before, 1
        while before is not None:
            page = await reader.page(Filter(name="boom"), before, 50)
            seen += [r["task_name"] for r in page.rows]
            before, requests = page.next_before, requests + 1
        assert seen == ["boom"] and requests >= 3
        unfiltered = await reader.page(Filter(), None, 20)
        assert [r["args"] for r in unfiltered.rows[:2]] == ["'common 29'", "'common 28'"]
        rest = await reader.page(Filter(), unfiltered.next_before, 20)
        assert len(unfiltered.rows) + len(rest.rows) == 31 and rest.next_before is None
        assert await reader.task(uuid4()) is None
        assert await reader.lane_counts() == {"inline": (31, 0)}
    finally:
        await reader.aclose()


async def test_the_reader_cannot_change_the_store(pg_url: str) -> None:
    await filled(pg_url)
    reader = PostgresReader(pg_url)
    try:
        await reader.check()
        with pytest.raises(Exception, match="read-only transaction"):
            await reader._fetch("DELETE FROM {t}")
        assert sum(n for *_, n in await reader.counts()) == 4
    finally:
        await reader.aclose()


async def test_purge_from_the_view_goes_through_the_store(pg_url: str) -> None:
    await filled(pg_url)
    source = StoreSource(pg_url)
    try:
        assert await source.purge(["error"], 0.0) == 1
        counts = {status: n for _, _, status, n in await source.reader.counts()}  # type: ignore[union-attr]
        assert counts == {"success": 1, "new": 2}
    finally:
        await source.aclose()


async def test_an_apps_own_dashboard_reads_its_postgres_store(pg_url: str) -> None:
    app = make_app(pg_url)
    async with app:
        await app.add_task("send", "one", timeout=10)
        source = AppSource(app)
        try:
            assert isinstance(source.reader, PostgresReader)
            page = await source.page(Filter(status="success"), None, 10)
            assert [r["args"] for r in page.rows] == ["'one'"]
            body = (await source.metrics()).decode()
            assert (
                samples(body)[("qtasks_mp_tasks_total", (("status", "success"), ("task", "send")))]
                == 1
            )
        finally:
            await source.aclose()
