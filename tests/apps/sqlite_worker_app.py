"""The worker app of the SQLite store tests, run as `python -m qtasks_mp run ...:app`.

`record(i)` appends "i" to the file named by $QTASKS_TEST_RUNS when it *starts* (one
`write` of a short line to an O_APPEND file: a SIGKILL leaves it whole or absent), so
the tests count how many times each task began.
"""

from __future__ import annotations

import asyncio
import os
import time

from qtasks_mp import QueueTasks

app = QueueTasks("sqlite-worker")


@app.task
async def record(i: int) -> int:
    fd = os.open(os.environ["QTASKS_TEST_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    await asyncio.sleep(0.005)
    return i


@app.task(rate_limit="10/s")
async def paced(i: int) -> None:
    """Appends "i start-time" when it starts: the rate-limit tests read the spacing."""
    fd = os.open(os.environ["QTASKS_TEST_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i} {time.time()!r}\n".encode())
    finally:
        os.close(fd)


@app.task
async def double(x: int) -> int:
    return 2 * x


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


if __name__ == "__main__":
    app.run_forever()
