"""AsyncTimer: triggers add tasks; names resolve when the trigger fires."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from qtasks_mp import TaskArgumentsError
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.timers import AsyncTimer


async def test_interval_timer_adds_the_task_with_its_arguments(app: QueueTasks) -> None:
    got: list[tuple[int, str]] = []
    three = asyncio.Event()

    @app.task(name="send_reminder")
    async def send_reminder(chat_id: int, text: str) -> None:
        got.append((chat_id, text))
        if len(got) == 3:
            three.set()

    timer = AsyncTimer(app=app)
    timer.add_task("send_reminder", trigger=IntervalTrigger(seconds=0.05), args=(123, "text"))
    async with app, timer:
        await asyncio.wait_for(three.wait(), 5)
    assert got[:3] == [(123, "text")] * 3
    assert timer.fired >= 3


async def test_name_resolves_when_fired_so_a_timer_may_come_first(app: QueueTasks) -> None:
    timer = AsyncTimer(app=app)
    timer.add_task(
        "later",
        trigger=DateTrigger(datetime.now() + timedelta(milliseconds=50)),
        kwargs={"n": 2},
        priority=-1,
    )
    done = asyncio.Event()

    @app.task
    async def later(n: int) -> None:
        done.set()

    async with app, timer:
        await asyncio.wait_for(done.wait(), 5)


async def test_unknown_name_at_fire_time_is_logged_not_raised(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    timer = AsyncTimer(app=app)
    fired = asyncio.Event()

    @app.task
    async def canary() -> None:
        fired.set()

    timer.add_task("daily_report", trigger=DateTrigger())
    timer.add_task("canary", trigger=DateTrigger(datetime.now() + timedelta(milliseconds=30)))
    with caplog.at_level(logging.ERROR, logger="qtasks_mp"):
        async with app, timer:
            await asyncio.wait_for(fired.wait(), 5)
    assert "timer for 'daily_report' could not add the task" in caplog.text
    assert "'daily_report' is not registered" in caplog.text


def test_cron_trigger_is_accepted_and_bad_trigger_is_refused() -> None:
    app = QueueTasks()
    timer = AsyncTimer(app=app)
    job = timer.add_task("x", trigger=CronTrigger(hour=23, minute=59))
    assert job.name == "x"
    with pytest.raises(TypeError, match=r"timer for task 'x'.*APScheduler trigger.*from_crontab"):
        timer.add_task("x", trigger="*/1 * * * *")  # type: ignore[arg-type]


def test_bad_args_are_refused_before_the_job_is_added() -> None:
    """args= is never split into characters (as add_task refuses it), and a bad one
    names the task and the fix; the timer gets no job."""
    app = QueueTasks()
    timer = AsyncTimer(app=app)

    @app.task
    def greet(a: str, b: str) -> None: ...

    every = IntervalTrigger(seconds=60)
    with pytest.raises(TaskArgumentsError, match=r"task 'greet': args= takes a tuple.*'hi'"):
        timer.add_task("greet", trigger=every, args="hi")  # type: ignore[arg-type]
    with pytest.raises(TaskArgumentsError, match=r"task 'greet': args= .*pass args=\(5,\)"):
        timer.add_task("greet", trigger=every, args=5)  # type: ignore[arg-type]
    with pytest.raises(TaskArgumentsError, match=r"task 'greet': kwargs= takes a dict"):
        timer.add_task("greet", "a", trigger=every, kwargs=["b"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="the task's name comes first, a str; got 5"):
        timer.add_task(5, trigger=every)
    assert timer.scheduler.get_jobs() == []
    timer.add_task("greet", trigger=every, args=["a", "b"])  # a list is fine
    assert len(timer.scheduler.get_jobs()) == 1
    with pytest.raises(TypeError, match="takes a QueueTasks app"):
        AsyncTimer(app=object())


def test_timer_in_the_main_loop_adds_to_a_sync_app_running_in_its_own() -> None:
    import threading

    from qtasks_mp import QueueTasks as SyncApp

    app = SyncApp()
    ran = threading.Event()

    @app.task
    def job() -> None:
        ran.set()

    app.start()  # the core runs in the sync facade's background loop
    try:
        timer = AsyncTimer(app=app)
        timer.add_task("job", trigger=DateTrigger())

        async def main() -> None:
            async with timer:
                await asyncio.to_thread(ran.wait, 5)

        asyncio.run(main())
        assert ran.is_set()
        assert app.wait_idle(timeout=5)
    finally:
        app.stop()
