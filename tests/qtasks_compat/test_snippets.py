"""QTasks' doc snippets that use an `app` defined elsewhere on their page: each test
makes that app, then runs the snippet's code (prefix changed) and checks the outcome
QTasks documents. The page and block are named in each test."""

# No `from __future__ import annotations`: the snippets annotate with classes made in
# the test function, which string annotations could not name (nor can they in QTasks).
import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pydantic
import pytest

from qtasks_mp import AsyncRouter, shared_task
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.enums import TaskStatusEnum
from qtasks_mp.plugins import AsyncState
from qtasks_mp.plugins.depends import Depends, ScopeEnum
from qtasks_mp.registries import AsyncTask

pytestmark = pytest.mark.timeout(30)


class Item(pydantic.BaseModel):
    name: str
    value: int


async def test_pydantic_arguments() -> None:
    """features/pydantic.md blocks 1-2: three ways to give the model's fields."""
    app = QueueTasks()

    @app.task(
        description="Test task using Pydantic.",
        tags=["example"],
    )
    async def example_pydantic(item: Item):
        return f"Hello, {item.name}!"

    async with app:
        task1 = await example_pydantic.add_task("Test", value=42, timeout=50)
        task2 = await example_pydantic.add_task("Test", 42, timeout=50)
        task3 = await example_pydantic.add_task(name="Test", value=42, timeout=50)
    assert [t.returning for t in (task1, task2, task3)] == ["Hello, Test!"] * 3


async def test_pydantic_model_beside_other_parameters() -> None:
    """features/pydantic.md block 5: a model and a parameter with a default."""
    app = QueueTasks()

    @app.task
    async def task_with_mix(item: Item, retries: int = 3):
        return item.value, retries

    async with app:
        task = await task_with_mix.add_task("x", 1, retries=5, timeout=5)
    assert task.returning == (1, 5)


async def test_yield_with_handler() -> None:
    """features/yield.md blocks 1-2: [8, 9, 10, 11, 12]."""
    app = QueueTasks()

    async def yield_func(result: int) -> int:
        print(result)
        return result + 2

    @app.task(
        description="Test task with a generator.",
        generate_handler=yield_func,
    )
    async def test_yield(n: int):
        for _ in range(n):
            n += 1
            yield n

    async with app:
        task = await test_yield.add_task(5, timeout=50)
    assert task.returning == [8, 9, 10, 11, 12]


async def test_sync_generator_with_sync_handler() -> None:
    """examples/yield.md block 2: each item through the handler."""
    app = QueueTasks()

    def sync_handler(value):
        print("SYNC:", value)
        return value * 2

    @app.task(generate_handler=sync_handler)
    def sync_gen(n: int):
        for i in range(n):
            yield i + 1

    async with app:
        task = await sync_gen.add_task(3, timeout=5)
    assert task.returning == [2, 4, 6]


@pytest.fixture
def own_shared_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared tasks join every app made after them: keep this test's to this test."""
    from qtasks_mp import routers

    monkeypatch.setattr(routers, "_shared", [])


@pytest.mark.usefixtures("own_shared_tasks")
async def test_shared_task_and_router() -> None:
    """examples/features.md blocks 1-4: shared_task, awaiting=True, AsyncRouter."""

    @shared_task()
    def shared_func():
        print("Shared task")
        return "shared"

    @shared_task(awaiting=True)
    async def async_shared():
        print("async shared task")
        return "async shared"

    router = AsyncRouter()

    @router.task()
    async def example():
        print("Router task")
        return "routed"

    app = QueueTasks()
    app.include_router(router)
    async with app:
        assert (await shared_func.add_task(timeout=5)).returning == "shared"
        assert (await async_shared.add_task(timeout=5)).returning == "async shared"
        assert (await example.add_task(timeout=5)).returning == "routed"


async def test_echo_self_and_ctx(caplog: pytest.LogCaptureFixture) -> None:
    """examples/features.md blocks 5 and 7, features/contexts.md block 1: self.task_name,
    self.ctx.task_name, self.ctx.task_uuid; examples/echo.md (as in examples/async's
    test_echo_ctx, without its 5 s sleep and its cancel): the attributes of self."""
    app = QueueTasks()
    seen: dict[str, Any] = {}

    @app.task(echo=True)
    async def echo_task(self):
        print(self.task_name)
        seen["name"] = self.task_name

    @app.task(echo=True)
    async def my_task(self):
        print(self.ctx.task_name)
        seen["ctx name"] = self.ctx.task_name

    @app.task(echo=True)
    def show(self):
        print(self.ctx.task_uuid)
        seen["uuid"] = self.ctx.task_uuid

    @app.task(echo=True, tags=["test"], priority=1, retry=3, retry_on_exc=[KeyError], test="test")
    async def test_echo_ctx(self: AsyncTask):
        self.ctx.get_logger().info("This is a test task!")
        await self.ctx.sleep(0.01)
        self.ctx.get_logger().info(self.ctx.get_config())
        meta = await self.ctx.get_metadata()
        return self.tags, self.priority, self.extra, self.retry, self.retry_on_exc, meta.uuid

    async with app:
        await echo_task.add_task(timeout=5)
        await my_task.add_task(timeout=5)
        shown = await show.add_task(timeout=5)
        with caplog.at_level(logging.INFO):
            task = await test_echo_ctx.add_task(timeout=5)
    assert seen == {"name": "echo_task", "ctx name": "my_task", "uuid": shown.uuid}
    assert task.returning == (["test"], 1, {"test": "test"}, 3, (KeyError,), task.uuid)
    assert "This is a test task!" in caplog.text


async def test_retry_on_exc() -> None:
    """examples/features.md block 8: retry=5 on ZeroDivisionError; 6 attempts, error."""
    app = QueueTasks()
    attempts = []

    @app.task(retry=5, retry_on_exc=[ZeroDivisionError])
    def risky():
        attempts.append(1)
        return 1 / 0

    async with app:
        task = await risky.add_task(timeout=10)
    assert task.status == TaskStatusEnum.ERROR.value and len(attempts) == 6


async def test_depends_task_scope(capsys: pytest.CaptureFixture[str]) -> None:
    """features/depends.md block 1: Open, 123, Close."""
    app = QueueTasks()

    @asynccontextmanager
    async def test_dep():
        print("Open")
        yield 123
        print("Close")

    @app.task
    async def test(dep: Annotated[int, Depends(test_dep, scope=ScopeEnum.TASK)]):
        print(dep)

    async with app:
        await test.add_task(timeout=5)
    assert capsys.readouterr().out.split() == ["Open", "123", "Close"]


async def test_states_page() -> None:
    """features/states.md block 1 (and 2, its printed state)."""
    app = QueueTasks()

    class MyState(AsyncState):
        pass

    @app.task
    async def step1(state: MyState):
        await state.set("state", "await_phone")
        await state.update(step=1, prompt="Enter phone number")
        return "ok"

    @app.task
    async def step2(state: MyState):
        print(await state.get_all())

        cur = await state.get("state")
        if cur != "await_phone":
            return "error"

        await state.update(step=2)
        await state.delete("state")
        await state.clear()
        return "ok"

    async with app:
        assert (await step1.add_task(timeout=5)).returning == "ok"
        assert (await MyState().get_all()) == {
            "state": "await_phone",
            "step": 1,
            "prompt": "Enter phone number",
        }
        assert (await step2.add_task(timeout=5)).returning == "ok"
        assert await MyState().get_all() == {}


async def test_pre_built_call() -> None:
    """features/task.md blocks 2-4: cls = task_func(...); cls.add_task()."""
    app = QueueTasks()

    @app.task()
    async def task_func(a: int, b: int = 0):
        return a + b

    async with app:
        cls = task_func(1, b=2, priority=0, timeout=5)
        assert (await cls.add_task()).returning == 3
        assert (await task_func.add_task(1, b=3, priority=0, timeout=5)).returning == 4


def test_config_fields() -> None:
    """features/task.md block 5, practice/freelancer.md block 1: QTasks' config fields."""
    app = QueueTasks()
    app.config.logs_default_level = logging.INFO
    app.config.result_statuses_end = [
        TaskStatusEnum.SUCCESS.value,
        TaskStatusEnum.ERROR.value,
        TaskStatusEnum.CANCEL.value,
    ]
    app.config.logs_default_level_server = logging.DEBUG
    app.config.delete_finished_tasks = True
    app.config.running_older_tasks = True
    app.config.result_time_interval = 0.1
    assert app.config.logs_default_level == logging.DEBUG


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/env/based_async_app.py's first lines: QTASKS_TASK_DEFAULT_PRIORITY."""
    monkeypatch.setenv("QTASKS_TASK_DEFAULT_PRIORITY", "21")
    app = QueueTasks()
    assert app.config.task_default_priority == 21


async def test_components_first_block() -> None:
    """components.md block 1: a sync app's task; added and run here."""
    from qtasks_mp import QueueTasks as SyncQueueTasks

    app = SyncQueueTasks()

    @app.task(name="test")
    def sample_task(id: int):
        return f"User {id} recorded"

    task = await asyncio.to_thread(sample_task.add_task, 7, timeout=5)
    app.stop()
    assert task.returning == "User 7 recorded"
