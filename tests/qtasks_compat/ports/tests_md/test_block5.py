# QTasks docs/en/tests.md, block 5, prefix changed (quotes straightened); the app is
# imported from app.py here, from QTasks' own tests/apps/app_async.py there.
from uuid import uuid4

import pytest
from app import app

from qtasks_mp.enums.task_status import TaskStatusEnum
from qtasks_mp.schemas.test import TestConfig
from qtasks_mp.tests import AsyncTestCase


@pytest.fixture()
def test_case():
    case = AsyncTestCase(app=app)
    case.settings(TestConfig.full())
    return case


@pytest.mark.asyncio
async def test_task_get_result(test_case):
    task = await test_case.add_task("test", 5)
    result = await app.get(uuid=task.uuid)
    assert result is not None


@pytest.mark.asyncio
async def test_task_returns_expected_result(test_case):
    task = await test_case.add_task("test", 5, timeout=10)
    # Check that the task returned the expected value
    assert task.returning is not None


@pytest.mark.asyncio
async def test_task_error_handling(test_case):
    task = await test_case.add_task("error_task", timeout=10)
    assert task.status == TaskStatusEnum.ERROR.value


@pytest.mark.asyncio
async def test_task_not_found():
    # UUID missing from storage
    result = await app.get(uuid=str(uuid4()))
    assert result is None
