"""PostgresStore in one process, on a real server: URLs, the schema it makes and versions,
errors that name the fix, leases (dead, expired, stalled, orphaned, renewed), a put tried
again after a lost reply, and connection loss (a server restart, a server gone too long)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pg_support import Cluster, query
from polling import until

from qtasks_mp import QueueConfig
from qtasks_mp.stores import store_from
from qtasks_mp.stores._postgres_schema import SCHEMA_VERSION
from qtasks_mp.stores.postgres import (
    PostgresStore,
    StoreError,
    StoreUnavailable,
    make_owner,
    redact,
)
from qtasks_mp.task import TaskRecord, TaskStatus, new_key

TABLE = "qtasks_mp_tasks"


def record(*args: Any, lane: str = "inline") -> TaskRecord:
    return TaskRecord(new_key(), "t", lane, 0, args, {}, time.time())


class Opened:
    """Stores opened by a test, closed at its end."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.stores: list[PostgresStore] = []

    async def __call__(self, **options: Any) -> PostgresStore:
        store = PostgresStore(self.url, schema=options.pop("schema", self.schema), **options)
        self.stores.append(store)
        await store.open(options.pop("config", QueueConfig()), lambda: None)
        return store

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return query(self.url, sql.replace("{t}", f"{self.schema}.{TABLE}"), *args)


@pytest.fixture
async def pg(pg_cluster: Cluster, pg_schema: str) -> AsyncIterator[Opened]:
    opened = Opened(pg_cluster.url(), pg_schema)
    yield opened
    for store in opened.stores:
        await store.close()


# ------------------------------------------------------------------ URLs and the schema


def test_store_from_takes_postgres_urls_and_messages_hide_the_password() -> None:
    for url in ("postgresql://u:secret@db.example/app", "postgres://u:secret@db.example/app"):
        store = store_from(url)
        assert isinstance(store, PostgresStore) and store.url == url
        assert "secret" not in repr(store) and "***" in repr(store)
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="postgresql://"):
        PostgresStore("mysql://u@h/db")


async def test_a_plain_user_gets_its_tables_made_and_versioned_in_its_own_database(
    pg_url: str,
) -> None:
    stores = [PostgresStore(pg_url) for _ in range(4)]
    # four processes starting at once on an empty database: one creates, none fails
    await asyncio.gather(*(s.open(QueueConfig(), lambda: None) for s in stores))
    try:
        await stores[0].put(record(1))
        assert query(pg_url, "SELECT current_schema(), current_user") == [("public", "qtasks")]
        assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [(str(SCHEMA_VERSION),)]
        assert query(pg_url, f"SELECT status FROM {TABLE}") == [("new",)]
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_schema_and_a_foreign_table_are_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open(QueueConfig(), lambda: None)
    await store.close()
    query(pg_url, "UPDATE qtasks_mp_meta SET value = '99'")
    with pytest.raises(StoreError, match=r"newer qtasks_mp \(schema version 99"):
        await store.open(QueueConfig(), lambda: None)
    query(pg_url, "CREATE SCHEMA other")
    query(pg_url, f"CREATE TABLE other.{TABLE} (id int)")
    with pytest.raises(StoreError, match="did not make"):
        await PostgresStore(pg_url, schema="other").open(QueueConfig(), lambda: None)


async def test_a_role_that_may_not_create_is_told_what_it_found(
    pg_cluster: Cluster, pg_url: str
) -> None:
    """A consumer role without CREATE on the database, given schema=: a newer version and
    a foreign table are named as such, not hidden behind a refused CREATE SCHEMA."""
    database = urlsplit(pg_url).path.lstrip("/")
    role = f"consumer_{database}"
    pg_cluster.sql(f"CREATE ROLE {role} LOGIN")
    owner = PostgresStore(pg_url, schema="app")
    await owner.open(QueueConfig(), lambda: None)
    await owner.close()
    query(pg_url, "UPDATE app.qtasks_mp_meta SET value = '99'")
    query(pg_url, "CREATE SCHEMA other")
    query(pg_url, f"CREATE TABLE other.{TABLE} (id int)")
    query(pg_url, f"GRANT USAGE ON SCHEMA app, other TO {role}")
    query(pg_url, f"GRANT ALL ON ALL TABLES IN SCHEMA app, other TO {role}")
    url = pg_cluster.url(user=role, database=database)
    with pytest.raises(StoreError, match=r"newer qtasks_mp \(schema version 99"):
        await PostgresStore(url, schema="app").open(QueueConfig(), lambda: None)
    with pytest.raises(StoreError, match="did not make"):
        await PostgresStore(url, schema="other").open(QueueConfig(), lambda: None)


async def test_a_creation_seen_half_done_is_judged_again_under_the_creators_lock(
    pg_url: str,
) -> None:
    """Outside the lock, another store's creation can look half done (its tasks table in
    the catalog, its version row not yet): a store opening then waits for the creator's
    lock and finds the tables made, instead of calling them foreign (a consumer of
    test_postgres_processes died of it, two consumers starting on a fresh database)."""
    import asyncpg

    from qtasks_mp.stores._postgres_schema import Statements

    creator = await asyncpg.connect(pg_url)
    store = PostgresStore(pg_url)
    try:
        await creator.execute("SELECT pg_advisory_lock(hashtext('qtasks_mp:public'))")
        *tables, version_row = Statements('"public"').create
        for statement in tables:
            await creator.execute(statement)
        opening = asyncio.ensure_future(store.open(QueueConfig(), lambda: None))
        waits = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        await until(lambda: opening.done() or query(pg_url, waits) == [(1,)], 10, "a waiter")
        assert not opening.done(), opening.exception()
        await creator.execute(version_row)
        await creator.execute("SELECT pg_advisory_unlock(hashtext('qtasks_mp:public'))")
        await asyncio.wait_for(opening, 10)
        assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [(str(SCHEMA_VERSION),)]
    finally:
        await creator.close()
        await store.close()


async def test_a_database_of_an_older_schema_version_is_upgraded_in_place(pg_url: str) -> None:
    from qtasks_mp.stores._postgres_schema import Statements

    old = Statements('"public"')
    for statement in old.create:  # as the first version left it, with one task
        query(pg_url, statement)
    query(
        pg_url,
        f"INSERT INTO {TABLE} (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args) VALUES "
        "(gen_random_uuid(), 'kept', 'inline', 'new', 0, 0, 0, 1, 1, 0, 0, ''::bytea)",
    )
    assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [("1",)]
    stores = [PostgresStore(pg_url) for _ in range(2)]
    await asyncio.gather(*(s.open(QueueConfig(), lambda: None) for s in stores))
    try:
        assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [(str(SCHEMA_VERSION),)]
        assert query(pg_url, f"SELECT task_name FROM {TABLE}") == [("kept",)]
        indexes = {r[0] for r in query(pg_url, "SELECT indexname FROM pg_indexes")}
        assert {"tasks_seq", "tasks_unique", "tasks_named"} <= indexes
    finally:
        for s in stores:
            await s.close()


async def test_a_version_1_schema_is_upgraded_in_place(pg_url: str) -> None:
    """Tables as version 1 made them (the same statements), a task queued there: the
    store adds version 2's columns, indexes and table, and the task still runs."""
    from qtasks_mp.stores._postgres_schema import Statements

    for statement in Statements('"public"').create:  # version 1: steps not applied
        query(pg_url, statement)
    assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [("1",)]
    old = PostgresStore(pg_url)
    await old.open(QueueConfig(), lambda: None)
    try:
        assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [(str(SCHEMA_VERSION),)]
        await old.put(record(1))
        [taken] = await old.take("inline", 10, time.time())
        rec = TaskRecord(new_key(), "t", "inline", 0, (), {}, time.time())
        rec.unique_key = "k"
        assert await old.put_unique(rec) is None
        assert (await old.put_unique(rec)) is None  # the same uuid again: a lost reply
        assert query(pg_url, f"SELECT count(*) FROM {TABLE} WHERE unique_key = 'k'") == [(1,)]
        assert taken.args == (1,)
    finally:
        await old.close()


async def test_errors_name_the_server_and_the_fix(pg_cluster: Cluster, pg_url: str) -> None:
    with pytest.raises(StoreError, match="does not exist: create the database"):
        await PostgresStore(pg_cluster.url(database="nowhere")).open(QueueConfig(), lambda: None)
    role = urlsplit(pg_url).path.strip("/") + "_visitor"
    pg_cluster.sql(f"CREATE ROLE {role} LOGIN")  # no CREATE on the owner's public schema
    visitor = pg_url.replace("qtasks@", f"{role}@")
    with pytest.raises(StoreError, match="needs CREATE on the schema the first time"):
        await PostgresStore(visitor).open(QueueConfig(), lambda: None)
    start = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach the server"):
        await PostgresStore("postgresql://u@127.0.0.1:1/db").open(QueueConfig(), lambda: None)
    assert time.monotonic() - start < 5


# ------------------------------------------------------------------ leases


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


async def _taken_by(pg: Opened, owner: str, until_s: float, n: int = 2) -> list[TaskRecord]:
    """`n` of 3 tasks put, leased to `owner` until `until_s` from now (server clock)."""
    store = await pg()
    recs = [record(i) for i in range(3)]
    for rec in recs:
        await store.put(rec)
    pg.rows(
        "UPDATE {t} SET status = 'process', lease_owner = $1, "
        "lease_until = extract(epoch from clock_timestamp()) + $2 WHERE uuid = ANY($3::uuid[])",
        owner,
        until_s,
        [r.uuid for r in recs[:n]],
    )
    return recs


async def test_leases_of_a_dead_process_are_reclaimed_at_open_counting_the_attempt(
    pg: Opened,
) -> None:
    owner = make_owner().split("|")
    owner[2] = str(_dead_pid())
    await _taken_by(pg, "|".join(owner), 3600)  # lease far from expiry: its owner is dead
    store = await pg()
    assert sorted(pg.rows("SELECT status, retry FROM {t}")) == [("new", 0), ("new", 1), ("new", 1)]
    [why] = {tb for (tb,) in pg.rows("SELECT traceback FROM {t} WHERE retry = 1")}
    assert "its dispatcher died" in why and "attempt counted" in why
    assert len(await store.take("inline", 10, time.time())) == 3


async def test_an_owner_on_another_host_keeps_its_leases_until_they_expire(pg: Opened) -> None:
    await _taken_by(pg, "elsewhere|4026531836|1|0|x", 1.0)  # liveness unknown: expiry counts
    store = await pg()
    assert sorted(pg.rows("SELECT status FROM {t}")) == [("new",), ("process",), ("process",)]
    await until(
        lambda: pg.rows("SELECT count(*) FROM {t} WHERE status = 'new'") == [(3,)], 5, "expiry"
    )
    assert len(await store.take("inline", 10, time.time())) == 3


async def test_a_stalled_dispatcher_strands_nothing(pg: Opened) -> None:
    """A's loop renews nothing (as when it is blocked): B runs A's tasks after lease_s."""
    a = await pg(lease_s=0.6)
    b = await pg()
    for i in range(3):
        await a.put(record(i))
    assert len(await a.take("inline", 10, time.time())) == 3
    assert a._upkeep is not None
    a._upkeep.cancel()  # A stalls: no renewal, no reclaim of its own
    start = time.monotonic()

    async def b_takes() -> list[TaskRecord]:
        return await b.take("inline", 10, time.time())

    taken: list[TaskRecord] = []
    while len(taken) < 3:
        assert time.monotonic() - start < 5, "A's tasks never reached B"
        taken += await b_takes()
        await asyncio.sleep(0.05)
    assert [r.retry for r in taken] == [1, 1, 1]
    assert time.monotonic() - start >= 0.5  # not before the lease ran out


async def test_own_leases_are_renewed_and_orphans_expire(pg: Opened) -> None:
    """Held tasks stay leased past lease_s; rows leased to us that we never received (a
    take whose reply was lost) are not renewed and come back, attempt counted."""
    store = await pg(lease_s=0.6)
    for i in range(3):
        await store.put(record(i))
    held = await store.take("inline", 2, time.time())
    pg.rows(  # the third one: leased to us by a take whose reply we never read
        "UPDATE {t} SET status = 'process', lease_owner = $1, "
        "lease_until = extract(epoch from clock_timestamp()) + 0.6 WHERE status = 'new'",
        store.owner,
    )
    [(first,)] = pg.rows(
        "SELECT min(lease_until) FROM {t} WHERE uuid = ANY($1::uuid[])", [r.uuid for r in held]
    )
    await until(
        lambda: pg.rows("SELECT count(*) FROM {t} WHERE status = 'new'") == [(1,)], 5, "orphan back"
    )
    await asyncio.sleep(0.7)  # past one more lease_s: the held ones are still ours
    rows = pg.rows(
        "SELECT status, retry, lease_until FROM {t} WHERE uuid = ANY($1::uuid[])",
        [r.uuid for r in held],
    )
    assert [(s, r) for s, r, _ in rows] == [("process", 0), ("process", 0)]
    assert min(u for _, _, u in rows) > first
    [orphan] = await store.take("inline", 10, time.time())
    assert orphan.args == (2,) and orphan.retry == 1


async def test_a_put_tried_again_never_brings_back_a_task_taken_or_finished_since(
    pg: Opened,
) -> None:
    mine, other = await pg(), await pg()
    rec = record(1)
    await mine.put(rec)
    [taken] = await other.take("inline", 1, time.time())
    await mine.put(rec)  # a retry of a put whose reply was lost: must change nothing
    assert pg.rows("SELECT status, lease_owner FROM {t}") == [("process", other.owner)]
    taken.status, taken.finished_at = TaskStatus.SUCCESS, time.time()
    await other.finish(taken)
    await mine.put(rec)
    assert pg.rows("SELECT status FROM {t}") == [("success",)]


class Unimportable:
    pass


async def test_a_task_whose_arguments_cannot_be_decoded_ends_error(pg: Opened) -> None:
    """A pickled class this program cannot import: that task ends `error`, the others run."""
    store = await pg()
    rec = record(Unimportable())
    await store.put(rec)
    name = Unimportable.__module__.encode()
    [(blob,)] = pg.rows("SELECT args FROM {t}")
    assert name in blob
    pg.rows("UPDATE {t} SET args = $1", blob.replace(name, b"x" * len(name)))
    await store.put(record(2))
    [ok] = await store.take("inline", 10, time.time())
    assert ok.args == (2,)
    [(status, tb)] = pg.rows("SELECT status, traceback FROM {t} WHERE uuid = $1", rec.uuid)
    assert status == "error" and "cannot be decoded in this program" in tb


# ------------------------------------------------------------------ connection loss


async def test_a_server_restart_costs_nothing_but_time(pg_cluster: Cluster, pg: Opened) -> None:
    woken = asyncio.Event()
    mine = PostgresStore(pg.url, schema=pg.schema, poll_s=600)  # no safety poll to hide behind
    pg.stores.append(mine)
    await mine.open(QueueConfig(), woken.set)
    other = await pg()
    await mine.put(record(0))
    [held] = await mine.take("inline", 1, time.time())
    listener = mine._listener
    woken.clear()
    pg_cluster.restart("immediate")  # every connection cut; crash recovery
    await other.put(record(1))  # the pool reconnects
    await until(
        lambda: mine._listener is not listener and mine._listener is not None, 10, "relisten"
    )
    await asyncio.wait_for(woken.wait(), 2)  # the new listener wakes us: we may have missed some
    woken.clear()
    await other.put(record(2))
    await asyncio.wait_for(woken.wait(), 2)  # NOTIFY reaches the new listener
    taken = await mine.take("inline", 10, time.time())
    assert [r.args for r in taken] == [(1,), (2,)]
    held.status, held.finished_at = TaskStatus.SUCCESS, time.time()
    await mine.finish(held)  # the lease outlived the restart: ours to finish
    assert sorted(pg.rows("SELECT status, retry FROM {t}")) == [
        ("process", 0),
        ("process", 0),
        ("success", 0),
    ]


async def test_calls_wait_for_a_server_that_comes_back_and_give_up_after_reconnect_s(
    pg_cluster: Cluster, pg: Opened
) -> None:
    store = await pg(reconnect_s=20)
    impatient = await pg(reconnect_s=0.3)
    await store.put(record(0))
    pg_cluster.pause()
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await impatient.put(record(1))
        assert time.monotonic() - start < 5
        waiting = asyncio.ensure_future(store.put(record(2)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    finally:
        pg_cluster.resume()
    await asyncio.wait_for(waiting, 15)
    assert sorted(a for (a,) in pg.rows("SELECT retry FROM {t}")) == [0, 0]


async def test_a_delayed_task_from_another_store_is_seen_and_runs_at_its_eta(pg: Opened) -> None:
    """What this store knows of ETAs (to spare a statement per pass) is forgotten when
    another process puts a delayed task: its NOTIFY says so."""
    woken = asyncio.Event()
    mine = PostgresStore(pg.url, schema=pg.schema)
    pg.stores.append(mine)
    await mine.open(QueueConfig(), woken.set)
    other = await pg()
    assert await mine.next_eta("inline") is None  # known now: no statement next time
    assert await mine.take("inline", 10, time.time()) == []
    later = record(1)
    later.eta = time.time() + 0.3
    await other.put(later)
    await asyncio.wait_for(woken.wait(), 5)
    assert await mine.next_eta("inline") == later.eta
    assert await mine.take("inline", 10, time.time()) == []
    [due] = await mine.take("inline", 10, later.eta + 0.01)
    assert due.uuid == later.uuid and due.eta == 0
    assert await mine.next_eta("inline") is None


def test_a_forked_child_leaves_the_parents_connections_alone(pg_cluster: Cluster) -> None:
    """gunicorn --preload, multiprocessing's fork: the child connects anew when its app
    opens the store; the parent's sessions (the same sockets) go on undisturbed."""
    url, schema = pg_cluster.url(), f"fork{os.getpid()}"
    store = PostgresStore(url, schema=schema)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(store.open(QueueConfig(), lambda: None))
        loop.run_until_complete(store.put(record(0)))
        with warnings.catch_warnings():  # 3.12+: fork() of a process with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:

                async def child() -> None:
                    assert store._pool is None  # forgotten, not closed
                    await store.open(QueueConfig(), lambda: None)
                    await store.put(record(1))
                    await store.close()

                asyncio.run(child())
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        loop.run_until_complete(store.put(record(2)))  # the parent's pool still works
        counts = loop.run_until_complete(store.counts())
        assert counts["new"] == 3
    finally:
        loop.run_until_complete(store.close())
        loop.close()


async def test_only_outcomes_skip_the_wait_for_the_disk_unless_full(pg: Opened) -> None:
    async def setting(pool: Any) -> str:
        async with pool.acquire() as conn:
            return str(await conn.fetchval("SHOW synchronous_commit"))

    normal, full = await pg(), await pg(synchronous="full")
    assert (await setting(normal._pool), await setting(normal._outcomes)) == ("on", "off")
    assert (await setting(full._pool), await setting(full._outcomes)) == ("on", "on")
    with pytest.raises(ValueError, match="synchronous"):
        PostgresStore(pg.url, synchronous="SOMETIMES")


async def test_a_version_1_schema_is_upgraded_in_place_keeping_its_tasks(pg_url: str) -> None:
    from qtasks_mp.stores._postgres_schema import Statements
    from qtasks_mp.stores._sqlite_codec import encode_call
    from qtasks_mp.stores.base import Cancelled

    for statement in Statements('"public"').create:  # what version 1 made
        query(pg_url, statement)
    query(
        pg_url,
        f"INSERT INTO {TABLE} (uuid, task_name, lane, status, priority, eta, retry, created_at, "
        "updated_at, started_at, finished_at, args, traceback) VALUES "
        "('00000000-0000-4000-8000-000000000001', 't', 'inline', 'error', 0, 0, 2, 1, 1, 1, 1, "
        "$1, 'ValueError: old')",
        encode_call((), {}),
    )
    assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [("1",)]
    store = PostgresStore(pg_url)
    await store.open(QueueConfig(), lambda: None)
    try:
        assert query(pg_url, "SELECT value FROM qtasks_mp_meta") == [(str(SCHEMA_VERSION),)]
        from uuid import UUID

        uuid = UUID("00000000-0000-4000-8000-000000000001")
        ok, again = await store.requeue(uuid, time.time()) or (None, None)
        assert ok and again is not None and again.history[0]["traceback"] == "ValueError: old"
        how, _ = await store.cancel(uuid, time.time()) or (None, None)
        assert how is Cancelled.ENDED_NOW
    finally:
        await store.close()


async def test_the_cli_cancels_a_task_running_here_and_requeues_it(pg_url: str) -> None:
    from qtasks_mp.asyncio import QueueTasks

    app = QueueTasks("pg-cancel", store=pg_url)
    app.config.shutdown_timeout = 2.0
    gate = asyncio.Event()
    runs: list[str] = []

    @app.task
    async def wait_for_gate() -> str:
        runs.append("started")
        await gate.wait()
        return "opened"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qtasks_mp", *args, "--store", pg_url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    async with app:
        task = await app.add_task("wait_for_gate")
        assert task is not None
        while not runs:  # noqa: ASYNC110 (the task's own flag; it starts within a turn or two)
            await asyncio.sleep(0.01)
        out = await asyncio.to_thread(cli, "cancel", str(task.uuid))
        assert out.returncode == 0 and out.stdout.strip() == f"{task.uuid}  cancelled", out
        got = await app.get(task.uuid)
        assert got is not None and got.status == "cancel"
        gate.set()
        out = await asyncio.to_thread(cli, "requeue", str(task.uuid))
        assert out.returncode == 0 and out.stdout.startswith("requeued 1 tasks"), out
        done = await app.wait(task.uuid, 30)
        assert done is not None and (done.status, done.returning) == ("success", "opened")
        assert [h["status"] for h in done.history] == ["cancel"]
        listed = await asyncio.to_thread(cli, "tasks")
        assert "earlier run 1: cancel after 1 attempt(s)" in listed.stdout
