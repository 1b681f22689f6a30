# QTasks docs/en/tests.md, block 1 (quotes straightened).
import unittest

from app import app


class TestTasks(unittest.TestCase):
    def setUp(self):
        # Add a task to the queue
        self._result = app.add_task("test", 5)

    def test_task_get_result(self):
        uuid = self._result.uuid
        result = app.get(uuid=uuid)
        self.assertIsNotNone(result)
