"""The dashboard in a real headless Chromium, served by a real uvicorn on 127.0.0.1.

With QTASKS_MP_SCREENSHOTS=1 the test also writes the images of docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from polling import until
from web_support import DOCS_IMG, fetch, screenshots_wanted

from qtasks_mp import ProcessExecutor
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.metrics import TaskMetrics
from qtasks_mp.web import AppSource, DashboardServer

XSS = "<script>window.__pwned = 1</script>"
WAIT_MS = 15_000


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


def build_app(path: Path) -> QueueTasks:
    app = QueueTasks(
        "shop",
        store=str(path),
        middlewares=[TaskMetrics()],
        executors={"process": ProcessExecutor(min_workers=0, max_workers=2)},  # decides to grow
    )
    app.config.shutdown_timeout = 2.0

    @app.task(name="send_reminder")
    async def send_reminder(chat_id: int, text: str) -> str:
        return f"sent to {chat_id}"

    @app.task(name="sync_with_crm", retry=1, retry_on_exc=[ConnectionError])
    async def sync_with_crm(order: int) -> None:
        raise ConnectionError(f"CRM unreachable for order {order}")

    app.task(name="daily_analytics", executor="process")(math.factorial)
    return app


async def screenshot(page: Page, name: str) -> None:
    if screenshots_wanted():
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS_IMG / name), full_page=True)


async def test_live_page_shows_new_task_escaped_and_purges(
    tmp_path: Path, browser: Browser
) -> None:
    app = build_app(tmp_path / "tasks.db")
    async with app, DashboardServer(AppSource(app), port=0) as dash:
        for i in range(12):
            await app.add_task("send_reminder", 1000 + i, f"order {i} delivered")
        for n in (200, 300, 400):
            await app.add_task("daily_analytics", n)
        await app.add_task("sync_with_crm", 42)
        await app.wait_idle()

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        pwned: list[Any] = []
        page.on("pageerror", lambda e: pwned.append(e))
        await page.goto(dash.url + "tasks")
        await expect(page.locator("#live-state")).to_have_text("live", timeout=WAIT_MS)
        await page.evaluate("window.__loaded_once = true")  # gone if the page reloads

        added = await app.add_task("send_reminder", 7, XSS)
        cell = page.locator("td.args code", has_text=XSS)
        await expect(cell).to_be_visible(timeout=WAIT_MS)  # pushed, not reloaded:
        assert await page.evaluate("window.__loaded_once") is True
        assert await page.evaluate("window.__pwned") is None  # shown as text, never run
        await screenshot(page, "dashboard-tasks.png")

        await page.click(f"a[href='/tasks/{added.uuid}']")
        await expect(page.locator("#task-args")).to_contain_text(XSS)
        assert await page.evaluate("window.__pwned") is None
        await expect(page.locator("#task-result")).to_contain_text("sent to 7")
        await screenshot(page, "dashboard-task.png")  # not a traceback: it names local paths

        failed = (await app.store.list_tasks("error", "sync_with_crm", 1))[0]
        await page.goto(dash.url + f"tasks/{failed[0].hex()[:8]}")  # not a uuid: 404 page

        await page.goto(dash.url + f"tasks/{UUID(bytes=failed[0])}")
        await expect(page.locator("#task-traceback")).to_contain_text("CRM unreachable")

        await page.goto(dash.url)
        await expect(page.locator(".card.error b")).to_have_text("1")
        await screenshot(page, "dashboard-overview.png")

        await page.goto(dash.url + "workers")
        stats = app.executors["process"].stats()
        pid = str(stats["pids"][0])
        await expect(page.locator("td", has_text=pid).first).to_be_visible()
        reason = stats["autoscale"]["history"][0]["reason"]  # the growth from 0 workers
        await expect(page.locator(".decisions td", has_text=reason)).to_be_visible()
        await screenshot(page, "dashboard-workers.png")

        # Purge through the page's own form (POST + its CSRF token), confirming the dialog.
        await page.goto(dash.url + "tasks")
        page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await page.click("#purge-form button")
        await expect(page.locator("#purged")).to_have_text("Purged 17 finished tasks.")
        assert (await app.store.counts())["success"] == 0
        assert pwned == []


async def test_token_guards_pages_and_actions_in_the_browser(
    tmp_path: Path, browser: Browser
) -> None:
    app = build_app(tmp_path / "tasks.db")
    async with app, DashboardServer(AppSource(app), port=0, token="s3cret") as dash:
        await app.add_task("send_reminder", 1, "hi", timeout=5)
        refused = await fetch(dash.url + "tasks")  # (a browser would prompt for basic auth)
        assert refused.status == 401 and "token" in refused.body
        assert refused.headers["www-authenticate"].startswith("Basic")
        page = await browser.new_page()
        await page.goto(dash.url + "tasks?token=s3cret")  # sets the cookie, drops ?token
        assert page.url == dash.url + "tasks"
        await expect(page.locator("#live-state")).to_have_text("live", timeout=WAIT_MS)
        await app.add_task("send_reminder", 2, "pushed while watching")
        await expect(page.get_by_text("pushed while watching")).to_be_visible(timeout=WAIT_MS)

        # A fresh browser context has no cookie: the same POST is refused.
        other = await browser.new_context()
        answer = await other.request.post(
            dash.url + "actions/purge", form={"csrf": "x", "status": "success"}
        )
        assert answer.status == 401
        queued = await app.add_task("daily_analytics", 10)
        assert queued is not None
        refused = await other.request.post(
            dash.url + f"actions/cancel/{queued.uuid}", form={"csrf": "x"}
        )
        assert refused.status == 401  # no action without the token
        await other.close()
        assert await app.wait(queued.uuid, 30) is not None
        assert (await app.store.counts())["success"] == 3

        # Basic auth with the token as password, as a browser's prompt sends it.
        basic = await browser.new_context(http_credentials={"username": "me", "password": "s3cret"})
        shown = await basic.new_page()
        await shown.goto(dash.url)
        await expect(shown.locator(".card.success b")).to_have_text("3")
        await basic.close()


async def test_cancel_a_running_process_task_and_requeue_it_from_the_pages(
    tmp_path: Path, browser: Browser
) -> None:
    app = build_app(tmp_path / "tasks.db")
    app.task(name="long_job", executor="process")(time.sleep)
    async with app, DashboardServer(AppSource(app), port=0) as dash:
        running = await app.add_task("long_job", 600)
        queued = [await app.add_task("long_job", 600) for _ in range(3)]  # 2 workers at most
        pool = app.executors["process"]

        async def started() -> bool:
            task = await app.get(running.uuid)
            return task is not None and task.status == "process" and len(pool.stats()["pids"]) > 0

        await until(started, 30, "the long job to run in a worker")
        page = await browser.new_page()
        pwned: list[Any] = []
        page.on("pageerror", lambda e: pwned.append(e))
        await page.goto(dash.url + f"tasks/{running.uuid}")
        page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await page.click(f"form[action$='/cancel/{running.uuid}'] button")
        await expect(page.locator("#action-done")).to_have_text("Cancelled.", timeout=WAIT_MS)
        await expect(page.locator("h1 .badge")).to_have_text("cancel")
        task = await app.get(running.uuid)
        assert task is not None and task.status == "cancel"
        assert task.traceback is not None and "was killed and replaced" in task.traceback
        assert pool.stats()["cancels"] == 1

        # Requeue it from its page: it runs again under the same id, the cancel in history.
        await page.click(f"form[action$='/requeue/{running.uuid}'] button")
        await expect(page.locator("#action-done")).to_contain_text("Requeued", timeout=WAIT_MS)
        await expect(page.locator("#task-history")).to_contain_text("was killed and replaced")
        await screenshot(page, "dashboard-requeued.png")
        again = await app.get(running.uuid)
        assert again is not None and again.status in ("new", "process") and again.history

        # From the task list: cancel every long job still there, queued or running.
        await page.goto(dash.url + "tasks?name=long_job")
        for t in [running, *queued]:
            form = page.locator(f"tr form[action$='/cancel/{t.uuid}'] button")
            page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
            await form.click()
            await expect(page.locator("#action-done")).to_have_text("Cancelled.", timeout=WAIT_MS)
        for t in [running, *queued]:
            got = await app.get(t.uuid)
            assert got is not None and got.status == "cancel"
        assert pwned == []
