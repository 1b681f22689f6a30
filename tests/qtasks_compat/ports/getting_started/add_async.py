# A client for block 6, in the form of docs/en/examples/index.md block 3:
# asyncio.run(app.add_task(...)) from another process.
import asyncio

from async_app import app

task = asyncio.run(app.add_task("mytest_async", "Asynchronous example", timeout=50))
print(task.returning)
