# QTasks docs/en/tests.md, block 3, prefix changed (quotes straightened).
import unittest

from app import app

from qtasks_mp.schemas.test import TestConfig
from qtasks_mp.tests import SyncTestCase


class TestTasks(unittest.TestCase):
    def setUp(self):
        self.case = SyncTestCase(app=app)
        # Enable full test config
        self.case.settings(TestConfig.full())

    def test_task_add(self):
        task = self.case.add_task("test", 5)
        self.assertIsNotNone(task)
