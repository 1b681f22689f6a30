"""Events (`app.events.on.<event>()`, qtasks_mp/events.py): each fires at its point of
the lifecycle, sync and async handlers alike; a failing handler is logged and changes
nothing; with no handler, a task's chain is the plain one."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from qtasks_mp import QueueTasks as SyncQueueTasks
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.events import AsyncEvents, Events, SyncEvents
from qtasks_mp.middleware import CallLogging
from qtasks_mp.middleware.base import layers
from qtasks_mp.task import Task

pytestmark = pytest.mark.timeout(30)


def _record_all(app: QueueTasks, seen: list[tuple[Any, ...]]) -> None:
    on = app.events.on

    @on.starting()
    def starting(app: object) -> None:
        seen.append(("starting", app))

    @on.worker_running  # QTasks' docs write it without the parentheses
    async def worker_running(app: object) -> None:
        seen.append(("worker_running", app))

    @on.worker_stopping()
    def worker_stopping(**kwargs: Any) -> None:
        seen.append(("worker_stopping", kwargs["app"]))

    @on.stopping()
    async def stopping(**kwargs: Any) -> None:
        seen.append(("stopping", kwargs["app"]))

    @on.task_running()
    def task_running(app: object, task: Task) -> None:
        seen.append(("task_running", task.task_name, task.status, task.retry))

    @on.task_stopping()
    async def task_stopping(app: object, task: Task) -> None:
        seen.append(("task_stopping", task.task_name, task.retry))

    @on.task_success()
    async def task_success(app: object, task: Task) -> None:
        seen.append(("task_success", task.task_name, task.returning))

    @on.task_error()
    def task_error(app: object, task: Task) -> None:
        assert task.traceback is not None
        seen.append(("task_error", task.task_name, task.traceback.splitlines()[-1]))

    @on.task_cancel()
    def task_cancel(app: object, task: Task) -> None:
        seen.append(("task_cancel", task.task_name, task.status))


async def test_each_event_fires_at_its_point() -> None:
    app = QueueTasks()
    seen: list[tuple[Any, ...]] = []
    _record_all(app, seen)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(retry=1, retry_on_exc=[ZeroDivisionError])
    async def divide(a: int, b: int) -> float:
        return a / b

    async with app:
        assert seen == [("starting", app), ("worker_running", app)]
        assert (await add.add_task(1, 2, timeout=5)).returning == 3
        assert (await divide.add_task(1, 0, timeout=5)).status == "error"
        assert ("worker_stopping", app) not in seen
    app_events = [e for e in seen if e[1] is app]
    assert app_events == [
        ("starting", app),
        ("worker_running", app),
        ("worker_stopping", app),
        ("stopping", app),
    ]
    assert seen[-1] == ("stopping", app)  # stop() waited for the task handlers first
    per_task = [e for e in seen if e[1] is not app]
    assert [e for e in per_task if e[1] == "add"] == [
        ("task_running", "add", "process", 0),
        ("task_stopping", "add", 0),
        ("task_success", "add", 3),
    ]
    assert [e for e in per_task if e[1] == "divide"] == [
        ("task_running", "divide", "process", 0),
        ("task_stopping", "divide", 0),
        ("task_running", "divide", "process", 1),
        ("task_stopping", "divide", 1),
        ("task_error", "divide", "ZeroDivisionError: division by zero"),
    ]


async def test_task_cancel_fires_for_a_running_task() -> None:
    app = QueueTasks()
    seen: list[tuple[Any, ...]] = []
    _record_all(app, seen)
    started = asyncio.Event()

    @app.task
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        task = await forever.add_task()
        await started.wait()
        assert await app.cancel(task.uuid) is True
    assert ("task_cancel", "forever", "cancel") in seen
    assert not [e for e in seen if e[0] in ("task_success", "task_error")]


async def test_a_failing_handler_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = QueueTasks()
    after: list[str] = []

    @app.events.on.worker_running()
    def broken(app: object) -> None:
        raise RuntimeError("handler bug")

    @app.events.on.task_running()
    async def broken_too(app: object, task: Task) -> None:
        raise ValueError("async handler bug")

    @app.events.on.task_running()
    def next_one(app: object, task: Task) -> None:
        after.append(task.task_name)

    @app.task
    async def ok() -> str:
        return "fine"

    with caplog.at_level(logging.ERROR, logger="qtasks_mp.events"):
        async with app:
            assert app.running
            assert (await ok.add_task(timeout=5)).returning == "fine"
    assert after == ["ok"]  # the handler after the failing one still ran
    failures = [r for r in caplog.records if r.name == "qtasks_mp.events"]
    assert len(failures) == 2
    assert "'worker_running'" in failures[0].getMessage()
    assert "broken" in failures[0].getMessage()
    assert "'task_running'" in failures[1].getMessage()
    assert failures[1].exc_info is not None and failures[1].exc_info[0] is ValueError


async def test_no_handler_leaves_the_chain_as_it_was() -> None:
    plain, told = QueueTasks(), QueueTasks()

    @told.events.on.task_running()
    def running(app: object, task: Task) -> None:
        pass

    for app in (plain, told):

        @app.task
        async def noop() -> None:
            return None

    async with plain, told:
        plain_route = plain._runtime._routes["noop"]
        told_route = told._runtime._routes["noop"]
    # no handler: the built-in chain, CallLogging outermost; a per-attempt handler:
    # one more layer, outside it
    assert type(layers(plain_route.chain)[0]) is CallLogging
    assert plain.events.middleware() is None
    outer, inner = layers(told_route.chain)[:2]
    assert type(outer).__name__ == "_AttemptEvents"
    assert type(inner) is CallLogging


def test_sync_app_tells_handlers_about_the_sync_app() -> None:
    app = SyncQueueTasks()
    seen: list[tuple[object, Any]] = []

    @app.events.on.task_success()
    def success(app: object, task: Task) -> None:
        seen.append((app, task.returning))

    @app.task
    def multiply(a: int, b: int) -> int:
        return a * b

    try:
        assert multiply.add_task(2, 3, timeout=5).returning == 6
    finally:
        app.stop()  # waits for the final-status handlers
    assert seen == [(app, 6)]


def test_qtasks_names_and_a_handler_that_is_not_a_function() -> None:
    assert AsyncEvents is Events and SyncEvents is Events
    app = QueueTasks()
    with pytest.raises(TypeError, match=r"app.events.on.starting\(\) above a def"):
        app.events.on.starting()("not a function")
