# The sync app for tests.md's SyncTestCase and unittest.TestCase blocks.
from qtasks_mp import QueueTasks

app = QueueTasks()


@app.task(name="test")
def test(number: int):
    return number
