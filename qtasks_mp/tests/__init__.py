"""QTasks' test cases (`qtasks.tests`): add tasks to an app running in the test.

`SyncTestCase(app=app)` takes the sync app, `AsyncTestCase(app=app)` the async one.
`add_task` starts the app if it is not running. The async case runs the app only
for the call (`async with app:`), because `unittest.IsolatedAsyncioTestCase` gives
each test a loop of its own and an app is bound to one loop: with `timeout=` the
finished `Task` comes back; without, the task is accepted and the app stops, so a
task that has not run by then ends `cancel` (memory store). `settings(TestConfig...)`
is kept for QTasks' code and changes nothing: the whole app always runs.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ..schemas.test import TestConfig
from ..task import Task


class SyncTestCase:
    __test__ = False

    def __init__(self, app: Any, name: str | None = None) -> None:
        self.app = app
        self.name = name
        self.test_config = TestConfig()

    def settings(self, test_config: TestConfig) -> None:
        self.test_config = test_config

    def start(self) -> None:
        self.app.start()

    def stop(self) -> None:
        self.app.stop()

    def add_task(self, task_name: str, *args: Any, **kwargs: Any) -> Task | None:
        result: Task | None = self.app.add_task(task_name, *args, **kwargs)
        return result

    def get(self, uuid: UUID | str) -> Task | None:
        result: Task | None = self.app.get(uuid)
        return result


class AsyncTestCase:
    __test__ = False

    def __init__(self, app: Any, name: str | None = None) -> None:
        self.app = app
        self.name = name
        self.test_config = TestConfig()

    def settings(self, test_config: TestConfig) -> None:
        self.test_config = test_config

    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()

    async def add_task(self, task_name: str, *args: Any, **kwargs: Any) -> Task | None:
        if self.app.running:
            result: Task | None = await self.app.add_task(task_name, *args, **kwargs)
            return result
        async with self.app:
            result = await self.app.add_task(task_name, *args, **kwargs)
            return result

    async def get(self, uuid: UUID | str) -> Task | None:
        result: Task | None = await self.app.get(uuid)
        return result


__all__ = ["AsyncTestCase", "SyncTestCase"]
