"""Middleware chain: order, per-task middleware, a middleware that raises, Timing, CallLogging."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from qtasks_mp import Call, CallLogging, Middleware
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.middleware.base import CallNext


class Trace(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        self.log.append(f"{self.name}>")
        result = await call_next(call)
        self.log.append(f"<{self.name}")
        return result


async def test_app_middleware_wraps_task_middleware_wraps_the_call() -> None:
    log: list[str] = []
    app = QueueTasks(middlewares=[Trace("app1", log), Trace("app2", log)])

    @app.task(middlewares=[Trace("task", log)])
    async def f() -> str:
        log.append("call")
        return "r"

    async with app:
        done = await app.add_task("f", timeout=5)
    assert done is not None and done.returning == "r"
    assert log == ["app1>", "app2>", "task>", "call", "<task", "<app2", "<app1"]


async def test_middleware_can_change_the_result() -> None:
    class Upper(Middleware):
        async def __call__(self, call: Call, call_next: CallNext) -> Any:
            return str(await call_next(call)).upper()

    app = QueueTasks(middlewares=[Upper()])
    app.task(name="f")(lambda: "quiet")
    async with app:
        done = await app.add_task("f", timeout=5)
    assert done is not None and done.returning == "QUIET"


async def test_a_middleware_that_raises_fails_the_task_with_its_traceback() -> None:
    class Broken(Middleware):
        async def __call__(self, call: Call, call_next: CallNext) -> Any:
            raise LookupError(f"no tenant for {call.task_name}")

    app = QueueTasks(middlewares=[Broken()])
    ran: list[int] = []
    app.task(name="f")(lambda: ran.append(1))
    async with app:
        done = await app.add_task("f", timeout=5)
    assert done is not None and done.status == "error" and not ran
    assert "LookupError: no tenant for f" in (done.traceback or "")


async def test_timing_reports_queue_wait_and_run_time(app: QueueTasks) -> None:
    @app.task
    async def f() -> None: ...

    for _ in range(5):
        await app.add_task("f")
    await app.start()
    await app.wait_idle(5)
    row = app.stats()["tasks"]["f"]
    assert row["count"] == row["ok"] == 5
    assert 0 <= row["run_p50_s"] <= row["run_p95_s"] < 1
    assert row["wait_p50_s"] is not None and row["wait_p50_s"] >= 0


async def test_call_logging_logs_failures_with_traceback_and_retries_as_warnings(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = 0

    @app.task(retry=1)
    async def fails() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError(f"bad input {attempts}")

    await app.start()
    with caplog.at_level(logging.DEBUG, logger="qtasks_mp"):
        await app.add_task("fails", timeout=5)
    records = [r for r in caplog.records if r.name == "qtasks_mp.calls"]
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in records]
    assert any(lvl == "WARNING" and "fails" in msg for lvl, msg in levels)
    errors = [r for r in records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "bad input 2" in str(errors[0].exc_info[1])
    assert any(r.levelname == "DEBUG" and r.getMessage().startswith("start fails") for r in records)


async def test_call_logging_level_is_configurable(caplog: pytest.LogCaptureFixture) -> None:
    app = QueueTasks(middlewares=[])
    app.middlewares[0] = CallLogging(level=logging.INFO)
    app.task(name="f")(lambda: None)
    with caplog.at_level(logging.INFO, logger="qtasks_mp"):
        async with app:
            await app.add_task("f", timeout=5)
    assert any(
        r.levelname == "INFO" and r.getMessage().startswith("done f") for r in caplog.records
    )
