# The app QTasks' docs/en/tests.md imports (`from app import app`): it has a task
# "test" taking a number and a task "error_task" (QTasks' tests/apps/app_async.py).
from qtasks_mp.asyncio import QueueTasks

app = QueueTasks()


@app.task(name="test")
async def test(number: int):
    return number


@app.task(name="error_task")
async def error_task():
    raise ZeroDivisionError("error_task")
