"""`QueueTasks(dashboard=...)`: the dashboard starts and stops with the app; `app.metrics()`."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_support import fetch as get

from qtasks_mp import SetupError
from qtasks_mp.asyncio import QueueTasks


async def test_the_dashboard_runs_while_the_app_runs() -> None:
    app = QueueTasks("shop", dashboard={"port": 0})
    app.task(name="f")(lambda: "ok")
    assert app.dashboard is not None
    async with app:
        await app.add_task("f", timeout=5)
        url = app.dashboard.url
        page = await get(url)
        assert page.status == 200 and "shop" in page.body
        scrape = await get(url + "metrics")
        names = {f.name for f in text_string_to_metric_families(scrape.body)}
        assert "qtasks_mp_task_duration_seconds" in names  # histograms: TaskMetrics is on
    refused = await get(url)
    assert refused.status == 0  # nobody listens once the app stopped


async def test_a_taken_port_fails_the_start_and_leaves_nothing_running() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        app = QueueTasks(dashboard=taken.getsockname()[1])
        with pytest.raises(OSError):
            await app.start()
        assert app.state == "stopped"
    finally:
        taken.close()


def test_dashboard_option_is_checked_at_construction() -> None:
    with pytest.raises(SetupError, match="dashboard=8000"):
        QueueTasks(dashboard="8000")  # type: ignore[arg-type]
    with pytest.raises(SetupError, match="port, host and token"):
        QueueTasks(dashboard={"prot": 8000})
    with pytest.raises(ValueError, match="token"):
        QueueTasks(dashboard={"port": 8000, "host": "0.0.0.0"})


async def test_app_metrics_counts_what_ran() -> None:
    app = QueueTasks()
    app.task(name="ok")(lambda: None)
    async with app:
        for _ in range(3):
            await app.add_task("ok", timeout=5)
        text = app.metrics().decode()
    samples = {
        (s.name, s.labels.get("status")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("task") == "ok"
    }
    assert samples[("qtasks_mp_tasks_total", "success")] == 3
