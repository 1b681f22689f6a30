"""Dashboard page loads over a store holding 1,000,000 tasks, SQLite or PostgreSQL.

    python benchmarks/web_million.py [--rows 1000000] [--keep PATH]
    python benchmarks/web_million.py --postgres [--rows 1000000]

Fills a store (999,900 successes, 100 errors spread through it, 1,000 queued),
serves it with `qtasks-mp web`'s server (StoreSource: a read-only connection, or
read-only PostgreSQL sessions) on a free port, and times each page over HTTP, the
median of 5 loads after one warm-up. `--postgres` starts a throw-away cluster (the
tests' `pg_support.Cluster`, fsync on) and fills it with one INSERT ... SELECT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores._sqlite_codec import encode_call, encode_value
from qtasks_mp.web import DashboardServer, StoreSource

TRACEBACK = "Traceback ...\nConnectionError: CRM down\n"


async def create_schema(path: str) -> None:
    app = QueueTasks("bench", store=path)
    await app.store.open(app.config, lambda: None)
    await app.store.close()


def fill(path: str, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    now = time.time()
    args = encode_call((12345, "order shipped"), {})
    result = encode_value("ok")
    errors = set(range(0, rows, max(1, rows // 100)))
    queued_from = rows - 1000

    def gen():  # type: ignore[no-untyped-def]
        for i in range(rows):
            t = now - (rows - i) * 0.001
            if i >= queued_from:
                yield (uuid.uuid4().bytes, "notify", "inline", "new", 0, 0.0, 0, t, t, 0.0, 0.0,
                       args, None, None)  # fmt: skip
            elif i in errors:
                yield (uuid.uuid4().bytes, "sync_with_crm", "inline", "error", 0, 0.0, 3, t, t,
                       t, t + 0.01, args, None, TRACEBACK)  # fmt: skip
            else:
                yield (uuid.uuid4().bytes, "notify", "inline", "success", 0, 0.0, 0, t, t, t,
                       t + 0.0005, args, result, None)  # fmt: skip

    conn.executemany(
        "INSERT INTO tasks (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args, result, traceback) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        gen(),
    )
    conn.commit()
    conn.close()


def fetch_body(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        body: bytes = r.read()
    return body


def get(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - start, len(body)


def sqlite_middle(path: str) -> tuple[int, uuid.UUID]:
    conn = sqlite3.connect(path)
    mid = conn.execute("SELECT max(seq) / 2 FROM tasks").fetchone()[0]
    some = conn.execute("SELECT uuid FROM tasks WHERE seq = ?", (mid,)).fetchone()[0]
    conn.close()
    return mid, uuid.UUID(bytes=some)


async def fill_postgres(url: str, rows: int) -> tuple[int, uuid.UUID]:
    import asyncpg

    app = QueueTasks("bench", store=url)
    await app.store.open(app.config, lambda: None)  # the schema
    await app.store.close()
    now = time.time()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO qtasks_mp_tasks (uuid, task_name, lane, status, priority, eta,
                   retry, created_at, updated_at, started_at, finished_at, args, result,
                   traceback)
               SELECT gen_random_uuid(),
                   CASE WHEN i % ($2 / 100) = 0 AND i < $2 - 1000 THEN 'sync_with_crm'
                        ELSE 'notify' END,
                   'inline',
                   CASE WHEN i >= $2 - 1000 THEN 'new'
                        WHEN i % ($2 / 100) = 0 THEN 'error' ELSE 'success' END,
                   0, 0, 0, $1 - ($2 - i) * 0.001, $1 - ($2 - i) * 0.001,
                   CASE WHEN i >= $2 - 1000 THEN 0 ELSE $1 - ($2 - i) * 0.001 END,
                   CASE WHEN i >= $2 - 1000 THEN 0 ELSE $1 - ($2 - i) * 0.001 + 0.0005 END,
                   $3, CASE WHEN i >= $2 - 1000 THEN NULL ELSE $4::bytea END,
                   CASE WHEN i % ($2 / 100) = 0 AND i < $2 - 1000 THEN $5 END
               FROM generate_series(0, $2 - 1) AS i""",
            now,
            rows,
            encode_call((12345, "order shipped"), {}),
            encode_value("ok"),
            TRACEBACK,
        )
        await conn.execute("VACUUM ANALYZE qtasks_mp_tasks")
        mid = await conn.fetchval("SELECT max(seq) / 2 FROM qtasks_mp_tasks")
        some = await conn.fetchval("SELECT uuid FROM qtasks_mp_tasks WHERE seq = $1", mid)
    finally:
        await conn.close()
    return int(mid), uuid.UUID(str(some))


async def measure(store: str, mid: int, some: uuid.UUID) -> None:
    async with DashboardServer(StoreSource(store), port=0) as dash:
        pages = {
            "tasks, first page": "tasks",
            f"tasks, page at row {mid:,}": f"tasks?before={mid}",
            "tasks, status=error (100 of 1M)": "tasks?status=error",
            "tasks, name=sync_with_crm": "tasks?name=sync_with_crm",
            "tasks, search 'CRM down'": "tasks?q=CRM+down",
            "task page": None,
            "overview (first: counting starts)": "",
            "overview (counted)": "",
            "metrics": "metrics",
        }
        pages["task page"] = f"tasks/{some}"
        for label, rel in pages.items():
            url = dash.url + (rel or "")
            if label.startswith("overview (first"):
                took, _ = await asyncio.to_thread(get, url)
                print(f"{label:40s} {took * 1e3:8.1f} ms  (counts still running)")
                start = time.perf_counter()
                for _ in range(600):  # a benchmark polling its own server, up to a minute
                    if b'id="counting"' not in await asyncio.to_thread(fetch_body, url):
                        break
                    await asyncio.sleep(0.1)
                took = time.perf_counter() - start + took
                print(f"{'overview, full counts ready after':40s} {took * 1e3:8.1f} ms")
                continue
            await asyncio.to_thread(get, url)
            times = [(await asyncio.to_thread(get, url))[0] for _ in range(5)]
            print(f"{label:40s} {statistics.median(times) * 1e3:8.1f} ms  (median of 5)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", help="build (or reuse) the store at this path")
    parser.add_argument("--postgres", action="store_true", help="a PostgreSQL store instead")
    args = parser.parse_args()
    if args.postgres:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "stores"))
        from pg_support import Cluster

        cluster = Cluster.start(fsync=True)
        try:
            url = cluster.url()
            start = time.perf_counter()
            mid, some = asyncio.run(fill_postgres(url, args.rows))
            took = time.perf_counter() - start
            print(f"filled {args.rows} rows in {took:.1f} s", file=sys.stderr)
            asyncio.run(measure(url, mid, some))
        finally:
            cluster.stop()
        return
    path = args.keep or os.path.join(tempfile.mkdtemp(), "million.db")
    if not os.path.exists(path):
        start = time.perf_counter()
        asyncio.run(create_schema(path))
        fill(path, args.rows)
        print(f"filled {args.rows} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    mid, some = sqlite_middle(path)
    asyncio.run(measure(path, mid, some))


if __name__ == "__main__":
    main()
