"""The dashboard over HTTP (a real uvicorn on 127.0.0.1): security, paging, the CLI form."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_support import Reply, fetch

from qtasks_mp import QueueTasks as SyncQueueTasks
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.context import AsyncTask
from qtasks_mp.web import (
    AppSource,
    DashboardServer,
    main_web,
    memory_reader,
    serve_dashboard,
    source,
    sqlite_reader,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_of(reply: Reply) -> str:
    """The CSRF cookie the page set, which its forms carry."""
    cookie = reply.headers["set-cookie"]
    found = re.search(r"qtasks_mp_csrf=([^;]+)", cookie)
    assert found is not None, cookie
    return found.group(1)


def memory_app(store: str | None = None) -> QueueTasks:
    app = QueueTasks("mem", store=store)
    app.config.shutdown_timeout = 2.0

    @app.task(name="echo")
    async def echo(text: str) -> str:
        return text

    @app.task(name="boom")
    async def boom(text: str) -> None:
        raise ValueError(f"<b>{text}</b>")

    @app.task(name="pages", echo=True)
    async def pages(self: AsyncTask) -> None:
        self.progress(30, total=120, note="<page 3>")

    return app


async def test_actions_need_post_and_the_pages_csrf_token(tmp_path: Path) -> None:
    app = memory_app(str(tmp_path / "t.db"))
    async with app, DashboardServer(AppSource(app), port=0) as dash:
        await app.add_task("echo", "hi", timeout=5)
        page = await fetch(dash.url + "tasks")
        token = csrf_of(page)
        assert f'name="csrf" value="{token}"' in page.body
        purge = dash.url + "actions/purge"
        cookie = {"Cookie": f"qtasks_mp_csrf={token}", **FORM}

        assert (await fetch(purge)).status == 405  # GET: no action
        body = urlencode({"status": "success"}).encode()
        assert (await fetch(purge, body, FORM)).status == 403  # no token at all
        wrong = urlencode({"csrf": "forged", "status": "success"}).encode()
        assert (await fetch(purge, wrong, cookie)).status == 403
        good = urlencode({"csrf": token, "status": "success"}).encode()
        elsewhere = {**cookie, "Origin": "http://evil.example"}
        assert (await fetch(purge, good, elsewhere)).status == 403
        assert (await app.store.counts())["success"] == 1

        done = await fetch(purge, good, cookie)
        assert done.status == 303 and done.headers["location"] == "/tasks?purged=1"
        assert (await app.store.counts())["success"] == 0


async def test_memory_store_pages_filters_and_escaping() -> None:
    app = memory_app()
    async with app, DashboardServer(AppSource(app), port=0) as dash:
        for i in range(120):
            await app.add_task("echo", f"item-{i}")
        await app.add_task("boom", "<i>x</i>")
        await app.wait_idle()

        first = await fetch(dash.url + "tasks")
        assert first.headers["content-security-policy"].startswith("default-src 'none'")
        assert first.body.count('class="row-') == 50
        assert "Purge finished" not in first.body  # the memory store has no purge: no button
        older = re.search(r'href="(/tasks\?before=\d+)" rel="next"', first.body)
        assert older is not None
        second = await fetch(dash.url + older.group(1)[1:])
        assert second.body.count('class="row-') == 50
        assert "item-70" in second.body and "item-71" not in second.body

        errors = await fetch(dash.url + "tasks?status=error")
        assert errors.body.count('class="row-') == 1
        assert "&lt;b&gt;&lt;i&gt;x&lt;/i&gt;&lt;/b&gt;" in errors.body
        assert "<b>" not in errors.body and "<i>x" not in errors.body

        found = await fetch(dash.url + "tasks?" + urlencode({"q": "item-7"}))
        assert found.body.count('class="row-') == 11  # item-7 and item-70..79

        assert (await fetch(dash.url + "tasks?status=nope")).status == 400
        assert (await fetch(dash.url + "tasks?before=x")).status == 400
        missing = await fetch(dash.url + "tasks/00000000-0000-4000-8000-000000000000")
        assert missing.status == 200 and "No task" in missing.body
        overview = await fetch(dash.url)
        assert 'class="card error" href="/tasks?status=error"><b>1</b>' in overview.body

        paged = await app.add_task("pages", timeout=5)
        assert paged is not None
        shown = "30/120 (25%) &lt;page 3&gt;"
        assert f'<td class="progress">{shown}</td>' in (await fetch(dash.url + "tasks")).body
        page = await fetch(dash.url + f"tasks/{paged.uuid}")
        assert f'<p id="task-progress">{shown}</p>' in page.body


async def test_a_sparse_filter_returns_within_its_budget_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "t.db")
    app = QueueTasks("s", store=path)

    @app.task(name="rare")
    async def rare() -> None:
        pass

    @app.task(name="common")
    async def common() -> None:
        pass

    await app.add_task("rare")
    for _ in range(30):
        await app.add_task("common")
    await app.store.close()
    monkeypatch.setattr(sqlite_reader, "SCAN_STEP", 10)
    monkeypatch.setattr(sqlite_reader, "SCAN_BUDGET_S", 0.0)  # one window per request
    reader = source.SQLiteReader(path)
    try:
        page = await reader.page(source.Filter(name="rare"), None, 50)
        assert page.rows == [] and page.scanned_to == page.next_before == 22
        seen = []
        before = page.next_before
        while before is not None:
            page = await reader.page(source.Filter(name="rare"), before, 50)
            seen += [r["task_name"] for r in page.rows]
            before = page.next_before
        assert seen == ["rare"]
    finally:
        await reader.aclose()


def test_refuses_a_reachable_address_without_a_token(tmp_path: Path) -> None:
    app = memory_app()
    with pytest.raises(ValueError, match="token"):
        DashboardServer(AppSource(app), host="0.0.0.0")
    DashboardServer(AppSource(app), host="0.0.0.0", token="t")  # accepted with one
    db = tmp_path / "t.db"
    assert main_web(["--store", str(db)]) == 2  # no such store
    db.write_bytes(b"")
    assert main_web(["--store", str(db), "--host", "0.0.0.0"]) == 2


async def test_qtasks_mp_web_serves_a_store_another_process_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "tasks.db")
    app = QueueTasks("producer", store=path)

    @app.task(name="send")
    async def send(text: str) -> str:
        return text

    @app.task(name="pages", echo=True)
    async def pages(self: AsyncTask) -> None:
        self.progress(3, total=4, note="almost")

    async with app:
        first = await app.add_task("send", "<script>x</script>", timeout=5)
        paged = await app.add_task("pages", timeout=5)
    waiting = await app.add_task("send", "waiting")  # stopped: it waits in the file
    assert paged is not None
    app_tasks = [t for t in (first, waiting) if t is not None]

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qtasks_mp.web",
        "--store",
        path,
        "--port",
        "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "QTASKS_MP_WEB_TOKEN": ""},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        url = re.search(r"serving (http://\S+/)", line)
        if url is None:
            assert proc.stderr is not None
            pytest.fail(f"no address printed: {line!r} {(await proc.stderr.read()).decode()}")
        tasks = await fetch(url.group(1) + "tasks")
        assert tasks.status == 200 and "&lt;script&gt;x&lt;/script&gt;" in tasks.body
        assert '<td class="progress">3/4 (75%) almost</td>' in tasks.body
        page = await fetch(url.group(1) + f"tasks/{paged.uuid}")
        assert '<p id="task-progress">3/4 (75%) almost</p>' in page.body
        body = (await fetch(url.group(1) + "metrics")).body
        samples = {
            (s.name, tuple(s.labels.items())): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }
        assert samples[("qtasks_mp_tasks_queued", (("lane", "inline"),))] == 1
        workers = await fetch(url.group(1) + "workers")
        assert "live in the process that runs the app" in workers.body

        # Cancel and requeue in the file, through the standalone dashboard's forms.
        waiting = next(t for t in app_tasks if t.args == ("waiting",))
        done = next(t for t in app_tasks if t.args != ("waiting",))
        page = await fetch(url.group(1) + f"tasks/{waiting.uuid}")
        token = csrf_of(page)
        assert f"/actions/cancel/{waiting.uuid}" in page.body
        cookie = {"Cookie": f"qtasks_mp_csrf={token}", **FORM}
        cancel = url.group(1) + f"actions/cancel/{waiting.uuid}"
        assert (await fetch(cancel, b"", FORM)).status == 403  # no CSRF token: refused
        form = urlencode({"csrf": token}).encode()
        answer = await fetch(cancel, form, cookie)
        assert answer.status == 303
        assert answer.headers["location"] == f"/tasks/{waiting.uuid}?done=cancelled"
        got = await app.get(waiting.uuid)
        assert got is not None and got.status == "cancel"
        again = await fetch(cancel, form, cookie)  # it had ended: said so, nothing changed
        assert again.headers["location"].endswith("done=already-ended")
        requeue = url.group(1) + f"actions/requeue/{waiting.uuid}"
        assert (await fetch(requeue, form, cookie)).status == 303
        got = await app.get(waiting.uuid)
        assert got is not None and got.status == "new" and got.history[0]["status"] == "cancel"
        refused = await fetch(url.group(1) + f"actions/requeue/{done.uuid}", form, cookie)
        assert refused.status == 409 and "success" in refused.body
        unknown = await fetch(url.group(1) + "actions/cancel/" + "0" * 32, form, cookie)
        assert unknown.status == 404
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    await app.store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_serve_dashboard_runs_in_the_apps_loop_until_cancelled() -> None:
    app = memory_app()
    port = free_port()
    async with app:
        await app.add_task("echo", "from the loop", timeout=5)
        serving = asyncio.create_task(serve_dashboard(app, port=port))
        await asyncio.sleep(0)  # start() binds and listens before its first await
        page = await fetch(f"http://127.0.0.1:{port}/tasks")
        assert "from the loop" in page.body
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
    assert (await fetch(f"http://127.0.0.1:{port}/")).status == 0  # nobody listens


def test_the_sync_facade_app_is_served_from_its_portal_loop() -> None:
    app = SyncQueueTasks("sync")
    app.config.shutdown_timeout = 2.0

    @app.task(name="report")
    def report(day: str) -> str:
        return f"report for {day}"

    done = app.add_task("report", "monday", timeout=5)
    assert done is not None and done.status == "success"
    loop = app.core.loop
    assert loop is not None
    server = DashboardServer(AppSource(app), port=0)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        page = asyncio.run(fetch(server.url + "tasks"))
        assert "&#39;monday&#39;" in page.body and "report" in page.body
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        app.stop()


async def test_a_sparse_filter_on_the_memory_store_keeps_the_loop_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = memory_app()
    async with app:
        await app.add_task("boom", "the one", timeout=5)
        for i in range(1500):
            await app.add_task("echo", f"n{i}")
        await app.wait_idle()
        monkeypatch.setattr(memory_reader, "MEMORY_SCAN_BUDGET_S", 0.0)  # stop at the first check
        src = AppSource(app)
        page = await src.page(source.Filter(status="error"), None, 50)
        assert page.rows == [] and page.next_before is not None
        found = []
        before = page.next_before
        for _ in range(10):  # 512 records a request: three requests reach it
            page = await src.page(source.Filter(status="error"), before, 50)
            found += page.rows
            before = page.next_before
            if before is None:
                break
        assert [r["task_name"] for r in found] == ["boom"] and before is None
        await src.aclose()


async def test_timers_show_with_their_next_fire_time() -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    from qtasks_mp.timers import AsyncTimer

    app = memory_app()
    timer = AsyncTimer(app=app)
    timer.add_task("echo", trigger=IntervalTrigger(hours=1), args=("hourly",))
    async with app, timer, DashboardServer(AppSource(app, timers=[timer]), port=0) as dash:
        page = await fetch(dash.url)
        assert "<h2>Timers</h2>" in page.body
        next_run = timer.scheduler.get_jobs()[0].next_run_time
        assert str(next_run)[:16] in page.body and "interval[1:00:00]" in page.body


def test_live_command_dispatches_web_and_top_and_names_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import qtasks_mp.web as web

    assert web.live_command(["stats", "--store", "x"]) is None
    assert web.live_command([]) is None
    missing = str(tmp_path / "missing.db")
    assert web.live_command(["top", "--store", missing, "--once"]) == 2
    assert web.live_command(["web", "--store", missing]) == 2
    assert "no task store" in capsys.readouterr().err
    monkeypatch.setattr(web, "EXTRA_MODULES", ("qtasks_mp_no_such_module",))
    assert web.live_command(["web", "--store", missing]) == 2
    assert "pip install 'qtasks-mp[web]'" in capsys.readouterr().err


async def test_without_a_token_only_loopback_host_names_are_answered() -> None:
    app = memory_app()
    async with app, DashboardServer(AppSource(app), port=0) as dash:
        port = dash.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert (await fetch(dash.url, headers={"Host": host})).status == 200
        rebound = await fetch(dash.url + "tasks", headers={"Host": f"evil.example:{port}"})
        assert rebound.status == 400 and "evil.example" in rebound.body
    async with app, DashboardServer(AppSource(app), port=0, token="t") as dash:
        named = await fetch(
            dash.url, headers={"Host": "tasks.example", "Authorization": "Bearer t"}
        )
        assert named.status == 200  # with a token, any name the proxy gives
