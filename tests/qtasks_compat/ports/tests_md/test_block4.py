# QTasks docs/en/tests.md, block 4, prefix changed (quotes straightened).
import unittest

from app import app

from qtasks_mp.schemas.test import TestConfig
from qtasks_mp.tests import AsyncTestCase


class TestAsyncQTasks(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.case = AsyncTestCase(app=app)
        self.case.settings(TestConfig.full())

    async def _add_task(self):
        return await self.case.add_task("test", 5, timeout=10)

    async def test_add_task(self):
        task = await self._add_task()
        self.assertIsNotNone(task)
