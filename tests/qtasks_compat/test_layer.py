"""The compat layer's own behaviour, beyond what QTasks' examples show."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from qtasks_mp import ConfigError, QueueTasks, TaskRegistrationError
from qtasks_mp import asyncio as aio
from qtasks_mp.home import Home
from qtasks_mp.registries import AsyncTask
from qtasks_mp.results import AsyncResult
from qtasks_mp.stats import AsyncStats
from qtasks_mp.timers import SyncTimer

pytestmark = pytest.mark.timeout(30)


def test_config_aliases_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    app = aio.QueueTasks()
    app.config.task_default_priority = 4
    assert app.config.default_task_priority == 4 == app.config.task_default_priority
    with pytest.raises(ConfigError, match="retry_tiem"):
        app.config.retry_tiem = 1  # still refused: not a field of ours nor of QTasks
    monkeypatch.setenv("QTASKS_LOGS_DEFAULT_LEVEL_SERVER", "debug")
    assert aio.QueueTasks().config.logs_default_level == logging.DEBUG
    monkeypatch.setenv("QTASKS_MAX_TASKS_PROCESS", "many")
    with pytest.raises(ConfigError, match=r"QTASKS_MAX_TASKS_PROCESS='many'.*int"):
        aio.QueueTasks()


def test_unknown_options_are_extras_unless_misspelt() -> None:
    app = aio.QueueTasks()

    @app.task(test="test", decode=str, awaiting=False)
    async def a() -> None: ...

    assert a.extra == {"test": "test", "decode": str, "awaiting": False}
    with pytest.raises(TaskRegistrationError, match=r"'priorty'.*'priority'"):

        @app.task(priorty=1)
        async def b() -> None: ...


async def test_nested_add_task_with_task_name_keyword() -> None:
    """examples/async's test_echo: `await self.add_task(5, task_name="test_num", ...)`."""
    app = aio.QueueTasks()

    @app.task(name="test_num")
    def test_num(number: int):
        return number

    @app.task(name="test_echo", echo=True)
    async def test_echo(self: AsyncTask):
        task = await self.add_task(5, task_name="test_num", timeout=50)
        by_name = await self.add_task("test_num", 6, timeout=50)
        return task.returning, by_name.returning

    async with app:
        assert (await test_echo.add_task(timeout=5)).returning == (5, 6)


def test_sync_task_object_and_timer_forms() -> None:
    app = QueueTasks()

    @app.task(name="test")
    async def test(num: int) -> int:
        return num

    timer = SyncTimer(app=app)
    job = timer.add_task(5, task_name="test", trigger=IntervalTrigger(hours=1))
    assert job.args[:3] == ("test", (5,), {})
    ours = timer.add_task("test", IntervalTrigger(hours=1), args=(6,))
    assert ours.args[:3] == ("test", (6,), {})
    assert test.add_task(7, timeout=5).returning == 7
    app.stop()


async def test_results_and_stats() -> None:
    app = aio.QueueTasks()

    @app.task(tags=["a"], description="doubles")
    async def double(x: int) -> int:
        return 2 * x

    async with app:
        task = await double.add_task(4)
        done = await AsyncResult(uuid=task.uuid, app=app).result(timeout=5)
    assert done is not None and done.returning == 8
    inspect = await AsyncStats(app=app).inspect()
    assert inspect.tasks("double", json=True)[0]["tags"] == ["a"]
    assert "Description: doubles" in inspect.tasks()


async def test_the_home_is_looked_at_once_and_never_while_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The single-process path does no extra work: an app running here never asks
    whether a worker runs elsewhere; a stopped one asks once, before its store opens."""
    asked: list[Path] = []
    real = Home.worker

    def counted(self: Home) -> str | None:
        asked.append(self.db)
        return real(self)

    monkeypatch.setattr(Home, "worker", counted)
    app = aio.QueueTasks()

    @app.task
    async def noop() -> None: ...

    async with app:
        for _ in range(100):
            await app.add_task("noop")
    assert asked == []
    stopped = aio.QueueTasks()

    @stopped.task
    async def later() -> None: ...

    for _ in range(3):
        await stopped.add_task("later")  # queued for its start (no worker runs)
    assert len(asked) == 1
    await stopped.stop()
