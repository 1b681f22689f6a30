"""`self.progress(...)` from a process worker: coalesced on the way, saved to a SQLite
store while the task runs (read by another connection, as another process would), and
kept with the outcome."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack
import procfuncs
from proc_support import fifo, write_fifo

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores.sqlite import SQLiteStore


def stored_progress(db: Path) -> Any:
    conn = sqlite3.connect(db, timeout=5)
    try:
        row = conn.execute("SELECT progress FROM tasks").fetchone()
    finally:
        conn.close()
    return None if row is None or row[0] is None else tuple(msgpack.unpackb(row[0]))


async def test_progress_from_a_process_worker_reaches_the_store_while_it_runs(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tasks.db"
    app = QueueTasks("progress", store=SQLiteStore(db))
    app.task(executor="process", echo=True)(procfuncs.progress_then_wait)
    path = fifo(tmp_path)
    async with app:
        task = await app.add_task("progress_then_wait", 20_000, path)
        assert task is not None
        deadline = time.monotonic() + 30
        # 20,000 calls, at most ~10 messages a second: the last value arrives with the
        # next message after the loop, or at the latest with the answer; here the task
        # still runs, so its last value reached us through a coalesced message.
        while stored_progress(db) != (20_000, 20_000, "item 20000"):
            assert time.monotonic() < deadline, f"stored progress: {stored_progress(db)}"
            await asyncio.sleep(0.05)
        running = await app.get(task.uuid)
        assert running is not None and running.status == "process"
        assert running.progress == (20_000, 20_000, "item 20000")
        assert app.stats()["progress"][str(task.uuid)]["done"] == 20_000
        await write_fifo(path, "go")
        done = await app.wait(task.uuid, 30)
    assert done is not None and done.status == "success"
    assert done.progress is not None and done.progress.note == "done"
    assert stored_progress(db) == (20_000, 20_000, "done")
