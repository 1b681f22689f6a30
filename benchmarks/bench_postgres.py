"""PostgreSQL queues side by side: qtasks_mp's PostgresStore, procrastinate, pgqueuer.

    python benchmarks/bench_postgres.py [--quick] [--rounds 3] [--only qtasks_mp]

One throw-away PostgreSQL cluster (initdb in a temporary directory, fsync on, the Unix
socket), started here and removed at the end; a fresh database per system and round.

1. durable enqueue rate: 64 concurrent producers (coroutines of one process) each call
   the system's one-task enqueue (`add_task`, `defer_async`, `enqueue`); each returns
   once its task is committed.
2. end to end: 2 consumer processes per system, started and warmed up (one task run)
   first; then one producer process enqueues N no-ops from 64 concurrent producers. The
   time runs from the first enqueue until N tasks are recorded as done in the database
   (polled every 10 ms by SQL). Each consumer runs 10 tasks at once (qtasks_mp's
   default `max_tasks_process`; procrastinate `concurrency=10`; pgqueuer `batch_size=10`).

Medians of `--rounds` runs; the machine is shared, so compare ratios. procrastinate and
pgqueuer come with the `bench` extra; a system that is not installed is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "stores"))  # the throw-away cluster of the tests

from pg_support import Cluster  # noqa: E402

PRODUCERS = 64
CONCURRENCY = 10

QTASKS_APP = """
import os
from qtasks_mp.asyncio import QueueTasks

app = QueueTasks("bench", store=os.environ["BENCH_PG_URL"])
app.config.logs_default_level = 30
app.config.max_tasks_process = {concurrency}
app.config.result_retention_count = 10**9

@app.task
async def noop() -> bool:
    return True

async def start():
    pass

async def produce(n, producers):
    import asyncio
    async def one(k):
        for _ in range(k):
            await app.add_task("noop")
    await asyncio.gather(*(one(n // producers) for _ in range(producers)))

async def stop():
    await app.store.close()

def consume():
    app.run_forever()
"""

PROCRASTINATE_APP = """
import asyncio, os
import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PG_URL"])
)

@app.task(name="noop")
async def noop():
    return True

async def start():
    await app.open_async()

async def produce(n, producers):
    async def one(k):
        for _ in range(k):
            await noop.defer_async()
    await asyncio.gather(*(one(n // producers) for _ in range(producers)))

async def stop():
    await app.close_async()

async def install():
    async with app.open_async():
        await app.schema_manager.apply_schema_async()

def consume():
    async def run():
        async with app.open_async():
            await app.run_worker_async(concurrency={concurrency})
    asyncio.run(run())
"""

PGQUEUER_APP = """
import asyncio, os
import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.queries import Queries

URL = os.environ["BENCH_PG_URL"]

pool = queries = None

async def start():
    global pool, queries
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=10)
    queries = Queries(AsyncpgPoolDriver(pool))

async def produce(n, producers):
    async def one(k):
        for _ in range(k):
            await queries.enqueue("noop", None)
    await asyncio.gather(*(one(n // producers) for _ in range(producers)))

async def stop():
    await pool.close()

async def install():
    conn = await asyncpg.connect(URL)
    await Queries(AsyncpgDriver(conn)).install()
    await conn.close()

def consume():
    async def run():
        conn = await asyncpg.connect(URL)
        pgq = PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job):
            return None

        await pgq.run(batch_size={concurrency})
    asyncio.run(run())
"""


class System:
    def __init__(self, name: str, module: str, source: str, done_sql: str, install: bool) -> None:
        self.name, self.module, self.source = name, module, source
        self.done_sql, self.install = done_sql, install


SYSTEMS = [
    System(
        "qtasks_mp",
        "bench_qtasks",
        QTASKS_APP,
        "SELECT count(*) FROM qtasks_mp_tasks WHERE status = 'success'",
        install=False,  # the store makes its own tables
    ),
    System(
        "procrastinate",
        "bench_procrastinate",
        PROCRASTINATE_APP,
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        install=True,
    ),
    System(
        "pgqueuer",
        "bench_pgqueuer",
        PGQUEUER_APP,
        "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'",
        install=True,
    ),
]


def installed(system: System) -> bool:
    package = {"qtasks_mp": "asyncpg"}.get(system.name, system.name)
    try:
        __import__(package)
    except ImportError:
        return False
    return True


class Bench:
    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.cluster, self.work = cluster, work
        self.databases = 0
        for system in SYSTEMS:
            source = system.source.replace("{concurrency}", str(CONCURRENCY))
            (work / f"{system.module}.py").write_text(textwrap.dedent(source))

    def fresh(self, system: System) -> str:
        self.databases += 1
        url = self.cluster.fresh_database(f"bench{self.databases}")
        if system.install:
            code = f"import asyncio, {system.module} as m; asyncio.run(m.install())"
            self._python(system, code, url)
        return url

    def _env(self, url: str) -> dict[str, str]:
        path = os.pathsep.join([str(self.work), str(REPO), os.environ.get("PYTHONPATH", "")])
        return {**os.environ, "BENCH_PG_URL": url, "PYTHONPATH": path}

    def _python(self, system: System, code: str, url: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=self._env(url),
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{system.name}: {code!r} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def enqueue_rate(self, system: System, n: int) -> float:
        """Tasks/s enqueued durably by PRODUCERS coroutines (timed inside the process)."""
        url = self.fresh(system)
        elapsed = float(self._python(system, _timed(system, n), url).split()[-1])
        return (n // PRODUCERS) * PRODUCERS / elapsed

    def end_to_end(self, system: System, n: int) -> float:
        """Tasks/s through 2 consumer processes, from the first enqueue to the last done."""
        url = self.fresh(system)
        n = (n // PRODUCERS) * PRODUCERS
        consumers = [
            subprocess.Popen(
                [sys.executable, "-c", f"import {system.module} as m; m.consume()"],
                env=self._env(url),
                cwd=self.work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        try:
            return asyncio.run(self._measure(system, url, n, consumers))
        finally:
            for c in consumers:
                c.terminate()
            for c in consumers:
                try:
                    c.wait(10)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait()

    async def _measure(
        self, system: System, url: str, n: int, consumers: list[subprocess.Popen[bytes]]
    ) -> float:
        import asyncpg

        async def produce(count: int) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _timed(system, count, warm=False),
                env=self._env(url),
                cwd=self.work,
                stdout=asyncio.subprocess.DEVNULL,
            )

        async def done_count(conn: asyncpg.Connection) -> int:
            try:
                return int(await conn.fetchval(system.done_sql))
            except asyncpg.UndefinedTableError:
                return 0  # qtasks_mp: the first store to open makes the table

        async def until(conn: asyncpg.Connection, count: int, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while await done_count(conn) < count:
                if any(c.poll() is not None for c in consumers):
                    raise RuntimeError(f"{system.name}: a consumer exited")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system.name}: {count} tasks not done in {timeout_s}s")
                await asyncio.sleep(0.01)

        conn = await asyncpg.connect(url)
        try:
            warm = await produce(1)  # consumers up, connected, listening
            await warm.wait()
            await until(conn, 1, 60)
            start = time.perf_counter()
            producer = await produce(n)
            await until(conn, n + 1, 600)
            elapsed = time.perf_counter() - start
            await producer.wait()
        finally:
            await conn.close()
        return n / elapsed


def _timed(system: System, n: int, *, warm: bool = True) -> str:
    """Code that enqueues `n` tasks from PRODUCERS coroutines and prints the seconds it
    took (after a warm-up, if `warm`: connections open, statements prepared)."""
    return textwrap.dedent(
        f"""
        import asyncio, time, {system.module} as m
        async def main():
            await m.start()
            if {warm}:
                await m.produce({PRODUCERS}, {PRODUCERS})
            start = time.perf_counter()
            await m.produce({n}, {min(n, PRODUCERS)})
            print(time.perf_counter() - start)
            await m.stop()
        asyncio.run(main())
        """
    )


def median_of(rounds: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", help="a system to run (repeatable)")
    opts = parser.parse_args()
    n_add = 3_200 if opts.quick else 12_800
    n_e2e = 1_280 if opts.quick else 6_400
    rounds = 1 if opts.quick else opts.rounds
    systems = [s for s in SYSTEMS if installed(s) and (not opts.only or s.name in opts.only)]
    cluster = Cluster.start(fsync=True)
    add: dict[str, float] = {}
    e2e: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(cluster, Path(tmp))
            for system in systems:
                add[system.name] = median_of(rounds, lambda s=system: bench.enqueue_rate(s, n_add))
                print(f"{system.name:14s} durable enqueue, {PRODUCERS} producers: "
                      f"{add[system.name]:9,.0f}/s", flush=True)  # fmt: skip
            for system in systems:
                e2e[system.name] = median_of(rounds, lambda s=system: bench.end_to_end(s, n_e2e))
                print(f"{system.name:14s} end to end, 2 consumer processes: "
                      f"{e2e[system.name]:9,.0f}/s", flush=True)  # fmt: skip
    finally:
        cluster.stop()
    print()
    ours_add, ours_e2e = add.get("qtasks_mp"), e2e.get("qtasks_mp")
    if ours_add is not None:
        verdict = "PASS" if ours_add >= 10_000 else "MISS"
        print(f"qtasks_mp add_task: {ours_add:,.0f}/s (target >= 10,000/s): {verdict}")
    others = {k: v for k, v in e2e.items() if k != "qtasks_mp"}
    if ours_e2e is not None and others:
        best = max(others, key=lambda k: others[k])
        ratio = ours_e2e / others[best]
        verdict = "PASS" if ratio >= 2 else "MISS"
        print(
            f"qtasks_mp end to end: {ratio:.1f}x {best}, the faster of the others "
            f"(target >= 2x): {verdict}"
        )


if __name__ == "__main__":
    main()
