"""`qtasks-mp top`: one frame rendered to a string, from an app and from a store file."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.context import AsyncTask
from qtasks_mp.top import main_top, render_text, snapshot
from qtasks_mp.web.source import AppSource


async def test_a_frame_shows_lanes_running_tasks_and_failures(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    started = asyncio.Event()

    @app.task(name="long_export", echo=True)
    async def long_export(self: AsyncTask, batch: int) -> None:
        self.progress(3, total=10, note="rows")
        started.set()
        await gate.wait()

    @app.task(name="sync_with_crm")
    async def sync_with_crm() -> None:
        raise ConnectionError("CRM unreachable")

    await app.start()
    await app.add_task("long_export", 7)
    await app.add_task("sync_with_crm", timeout=5)
    await asyncio.wait_for(started.wait(), 5)
    source = AppSource(app)
    try:
        frame = render_text(await snapshot(source), width=140)
    finally:
        await source.aclose()
    gate.set()
    assert "qtasks_mp top test" in frame
    assert "1 queued" not in frame and "1 running" in frame and "1 failed" in frame
    for lane in ("inline", "thread"):
        assert lane in frame
    running = re.split(r"^running\s*$", frame, flags=re.M)[1]
    assert "long_export" in running.split("recent failures")[0]
    assert "3/10 (30%) rows" in running.split("recent failures")[0]
    assert "ConnectionError: CRM unreachable" in frame.split("recent failures")[1]
    assert "\x1b[" not in frame  # plain text, no colour codes


async def test_once_prints_a_store_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "tasks.db")
    app = QueueTasks("producer", store=path)

    @app.task(name="notify")
    async def notify(text: str) -> None:
        if text == "bad":
            raise ValueError("no such chat")

    async with app:
        await app.add_task("notify", "ok", timeout=5)
        await app.add_task("notify", "bad", timeout=5)
    await app.add_task("notify", "later")  # waits in the file
    await app.store.close()

    assert await asyncio.to_thread(main_top, ["--store", path, "--once"]) == 0
    out = capsys.readouterr().out
    assert "1 queued" in out and "1 ok" in out and "1 failed" in out
    assert "ValueError: no such chat" in out
    assert "notify" in out


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_top(["--store", str(tmp_path / "none.db"), "--once"]) == 2
    assert "no task store" in capsys.readouterr().err
    (tmp_path / "other.db").write_bytes(b"")
    assert main_top(["--store", str(tmp_path / "other.db"), "--interval", "0"]) == 2


async def test_watch_draws_an_app_of_this_process(app: QueueTasks) -> None:
    import io

    from rich.console import Console

    from qtasks_mp.top import watch

    @app.task(name="ping")
    async def ping() -> None:
        pass

    await app.start()
    await app.add_task("ping", timeout=5)
    out = io.StringIO()
    await watch(app, 0.01, console=Console(file=out, width=120, color_system=None), frames=2)
    assert out.getvalue().count("qtasks_mp top test") >= 1 and "ping" in out.getvalue()
