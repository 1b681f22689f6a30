"""The worker app of the PostgreSQL store tests, run as
`python -m qtasks_mp run tests/apps/pg_worker_app.py:app`.

Its store: $QTASKS_TEST_PG_URL, with `lease_s` from $QTASKS_TEST_LEASE_S (default 30).
`record(i)` appends "i" to the file named by $QTASKS_TEST_RUNS when it *starts* (one
`write` of a short line to an O_APPEND file: a SIGKILL leaves it whole or absent), then
sleeps $QTASKS_TEST_TASK_S, so the tests count how many times each task began.
"""

from __future__ import annotations

import asyncio
import os

from qtasks_mp import QueueTasks
from qtasks_mp.stores.postgres import PostgresStore

store = PostgresStore(
    os.environ["QTASKS_TEST_PG_URL"], lease_s=float(os.environ.get("QTASKS_TEST_LEASE_S", "30"))
)
app = QueueTasks("pg-worker", store=store)


@app.task
async def record(i: int) -> int:
    fd = os.open(os.environ["QTASKS_TEST_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    await asyncio.sleep(float(os.environ.get("QTASKS_TEST_TASK_S", "0.005")))
    return i


@app.task
async def double(x: int) -> int:
    return 2 * x


if __name__ == "__main__":
    app.run_forever()
