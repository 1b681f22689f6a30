"""The `Store` contract, run unchanged over every store: memory, SQLite, PostgreSQL.

Tests that only a shared (durable) store can pass (values encoded, other processes,
restarts) run over `durable` stores only; the rest over all three. A store here is
opened with its own `wake` callback, as the app opens it; `peer()` opens a second store
on the same data, as another process would.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from pg_support import Cluster
from polling import until

from qtasks_mp import MemoryStore, QueueConfig, Retry, SerializationError
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores.base import Store
from qtasks_mp.stores.postgres import PostgresStore
from qtasks_mp.stores.sqlite import SQLiteStore
from qtasks_mp.task import TaskRecord, TaskStatus, new_key, new_uuid

ALL = ["memory", "sqlite", "postgres"]
DURABLE = ["sqlite", "postgres"]


class Color(enum.IntEnum):
    RED = 1


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def record(*args: Any, priority: int = 0, lane: str = "inline", eta: float = 0.0) -> TaskRecord:
    rec = TaskRecord(new_key(), "t", lane, priority, args, {}, time.time())
    rec.eta = eta
    return rec


class Backend:
    """Makes stores of one kind on one piece of data (a file, a schema)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.made: list[Store] = []
        if kind == "postgres":
            cluster: Cluster = request.getfixturevalue("pg_cluster")
            self.url = cluster.url()
            self.schema: str = request.getfixturevalue("pg_schema")

    def make(self, **options: Any) -> Store:
        """A new store on this backend's data (closed at the end of the test)."""
        store: Store
        if self.kind == "memory":
            store = MemoryStore()
        elif self.kind == "sqlite":
            store = SQLiteStore(self.tmp_path / "tasks.db", **options)
        else:
            store = PostgresStore(self.url, schema=self.schema, **options)
        self.made.append(store)
        return store

    def app_store(self) -> Any:
        """What `QueueTasks(store=...)` is given: a store object, or None for memory."""
        return None if self.kind == "memory" else self.make()

    async def open(
        self, config: QueueConfig | None = None, wake: Callable[[], None] | None = None, **o: Any
    ) -> Store:
        store = self.make(**o)
        await store.open(config or QueueConfig(), wake or (lambda: None))
        return store

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()  # a store never opened, or closed already: nothing to do


@pytest.fixture(params=ALL)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(request.param, tmp_path, request)
    yield b
    await b.close_all()


@pytest.fixture(params=DURABLE)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(request.param, tmp_path, request)
    yield b
    await b.close_all()


# ------------------------------------------------------------------ order, lanes, ETA


async def test_take_orders_by_priority_then_arrival(backend: Backend) -> None:
    store = await backend.open()
    priorities = [3, -1, 0, 3, -1, 0, 2, 0, 7, -5, 0]
    for i, p in enumerate(priorities):
        await store.put(record(i, priority=p))
    out: list[tuple[int, int]] = []
    while taken := await store.take("inline", 3, time.time()):
        assert len(taken) <= 3 and all(r.status == TaskStatus.PROCESS for r in taken)
        out += [(r.priority, r.args[0]) for r in taken]
    assert out == sorted((p, i) for i, p in enumerate(priorities))
    assert (await store.counts())["process"] == len(priorities)


async def test_concurrent_puts_keep_arrival_order_among_equals(backend: Backend) -> None:
    store = await backend.open()
    await asyncio.gather(*(store.put(record(i)) for i in range(300)))
    taken = await store.take("inline", 1000, time.time())
    assert sorted(r.args[0] for r in taken) == list(range(300))
    assert [r.seq for r in taken] == sorted(r.seq for r in taken)


async def test_lanes_are_separate_and_delayed_tasks_wait_for_their_eta(backend: Backend) -> None:
    store = await backend.open()
    now = time.time()
    await store.put(record(lane="thread"))
    later = record(eta=now + 60)
    await store.put(later)
    assert await store.take("inline", 10, now) == []
    assert await store.next_eta("inline") == later.eta
    assert len(await store.take("thread", 10, now)) == 1
    assert [r.uuid for r in await store.take("inline", 10, now + 61)] == [later.uuid]
    assert await store.next_eta("inline") is None


async def test_a_due_task_keeps_its_place_among_ready_ones(backend: Backend) -> None:
    store = await backend.open()
    now = time.time()
    first = record("delayed", eta=now + 5)
    await store.put(first)
    await store.put(record("ready"))
    taken = await store.take("inline", 10, now + 6)
    assert [r.args[0] for r in taken] == ["delayed", "ready"]  # arrival order, not ETA


async def test_put_back_for_retry_keeps_retry_and_traceback(backend: Backend) -> None:
    store = await backend.open()
    await store.put(record(1))
    [rec] = await store.take("inline", 10, time.time())
    rec.retry, rec.eta, rec.traceback = 1, time.time() + 30, "ConnectionError: first try"
    rec.status = TaskStatus.NEW  # as the dispatcher puts a retry back
    await store.put(rec)
    assert (await store.counts())["new"] == 1
    assert await store.take("inline", 10, time.time()) == []
    assert await store.next_eta("inline") == rec.eta
    [again] = await store.take("inline", 10, rec.eta + 1)
    assert (again.uuid, again.retry, again.traceback) == (rec.uuid, 1, rec.traceback)


async def test_finish_then_get_and_counts(backend: Backend) -> None:
    store = await backend.open()
    for i in range(3):
        await store.put(record(i))
    a, b = await store.take("inline", 2, time.time())
    a.status, a.returning, a.finished_at = TaskStatus.SUCCESS, {"n": [1, 2]}, time.time()
    b.status, b.traceback, b.finished_at = TaskStatus.ERROR, "ValueError: no\n", time.time()
    await store.finish(a)
    await store.finish(b)
    got_a, got_b = await store.get(a.uuid), await store.get(b.uuid)
    assert got_a is not None and (got_a.status, got_a.returning) == ("success", {"n": [1, 2]})
    assert got_b is not None and (got_b.status, got_b.traceback) == ("error", "ValueError: no\n")
    assert await store.get(new_uuid()) is None
    counts = await store.counts()
    assert counts == {"new": 1, "process": 0, "success": 1, "error": 1, "cancel": 0}


async def test_drop_queued_cancels_what_has_not_started(backend: Backend) -> None:
    store = await backend.open()
    a, b = record(), record(eta=time.time() + 60)
    await store.put(a)
    await store.put(b)
    await store.put(record())
    await store.take("inline", 1, time.time())
    assert await store.drop_queued() == 2
    got = await store.get(b.uuid)
    assert got is not None and got.status == TaskStatus.CANCEL
    assert (await store.counts())["cancel"] == 2
    assert await store.take("inline", 10, time.time() + 100) == []


async def test_retention_keeps_at_most_count_and_drops_by_age(backend: Backend) -> None:
    config = QueueConfig()
    config.result_retention_count = 5
    store = await backend.open(config)
    recs = [record(i) for i in range(20)]
    for rec in recs:
        await store.put(rec)
    for rec in await store.take("inline", 20, time.time()):
        rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
        await store.finish(rec)

    async def successes() -> int:
        return (await store.counts())["success"]

    await until(lambda: _equals(successes(), 5), 5, "retention by count")
    kept = [r for r in await _all(store, [rec.uuid for rec in recs]) if r is not None]
    assert len(kept) == 5
    config.result_retention_s = 0.0
    await store.put(record())
    [late] = await store.take("inline", 1, time.time())
    late.status, late.finished_at = TaskStatus.ERROR, time.time() + 0.01
    await store.finish(late)  # a finish after them: the five are older than 0 s now

    async def gone() -> bool:
        return all(r is None for r in await _all(store, [rec.uuid for rec in kept]))

    await until(gone, 5, "retention by age")


async def _all(store: Store, uuids: Any) -> list[TaskRecord | None]:
    return [await store.get(u) for u in uuids]


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_values_round_trip_exactly(backend: Backend) -> None:
    store = await backend.open()
    args = (
        (1, (2, 3)),
        {1: "int key", "nested": [(4,), {5}]},
        b"\x00bytes",
        Color.RED,
        datetime.datetime(2024, 5, 1, 12, 30),
        Point(3),
        Fraction(1, 3),
        None,
        1.5,
        2**70,
        "ünïcode",
    )
    rec = record(*args)
    rec.kwargs = {"when": datetime.date(2024, 1, 2), "t": ()}
    await store.put(rec)
    [taken] = await store.take("inline", 1, time.time())
    assert taken.args == args and taken.kwargs == rec.kwargs
    assert type(taken.args[3]) is Color and type(taken.args[0][1]) is tuple
    taken.status, taken.returning = TaskStatus.SUCCESS, {"result": (Point(1), [1, 2])}
    taken.finished_at = time.time()
    await store.finish(taken)
    got = await store.get(taken.uuid)
    assert got is not None and got.status == "success"
    assert got.returning == {"result": (Point(1), [1, 2])}


# ------------------------------------------------------------------ durable stores only


async def test_an_argument_that_cannot_be_stored_is_refused_by_name(durable: Backend) -> None:
    store = await durable.open()
    with pytest.raises(SerializationError, match=r"task 't'.*argument 1.*lock"):
        await store.put(record(1, threading.Lock()))
    assert sum((await store.counts()).values()) == 0


async def test_a_result_that_cannot_be_stored_becomes_an_error(durable: Backend) -> None:
    store = await durable.open()
    await store.put(record())
    [rec] = await store.take("inline", 1, time.time())
    rec.status, rec.returning, rec.finished_at = TaskStatus.SUCCESS, threading.Lock(), time.time()
    await store.finish(rec)
    got = await store.get(rec.uuid)
    assert got is not None and got.status == "error" and "cannot be stored" in str(got.traceback)


async def test_a_put_is_visible_to_another_store_when_it_returns(durable: Backend) -> None:
    mine, other = await durable.open(), await durable.open()
    rec = record(7)
    await mine.put(rec)
    got = await other.get(rec.uuid)
    assert got is not None and got.status == "new" and got.args == (7,)


async def test_concurrent_puts_share_commits(durable: Backend) -> None:
    store = await durable.open()
    before = store.batches  # type: ignore[attr-defined]
    await asyncio.gather(*(store.put(record(i)) for i in range(2000)))
    assert (await store.counts())["new"] == 2000
    batches = store.batches - before  # type: ignore[attr-defined]
    assert batches < 100, f"{batches} commits for 2000 puts"


async def test_two_stores_never_take_the_same_task(durable: Backend) -> None:
    a, b = await durable.open(), await durable.open()
    await asyncio.gather(*(a.put(record(i)) for i in range(400)))

    async def drain(store: Store) -> list[int]:
        got: list[int] = []
        while taken := await store.take("inline", 7, time.time()):
            got += [r.args[0] for r in taken]
        return got

    # Taking turns: what one store leased, the other never gets.
    first, second = await a.take("inline", 7, time.time()), await b.take("inline", 7, time.time())
    assert len(first) == len(second) == 7
    assert not {r.uuid for r in first} & {r.uuid for r in second}
    # Racing: which store gets how many is the scheduler's business; none twice, none lost.
    drains = await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
    everything = [r.args[0] for r in (*first, *second)] + [i for got in drains for i in got]
    assert sorted(everything) == list(range(400)), "a task taken twice, or never"


async def test_commits_of_another_store_wake_us_and_our_own_do_not(durable: Backend) -> None:
    woken = asyncio.Event()
    wakes: list[float] = []

    def wake() -> None:
        wakes.append(time.monotonic())
        woken.set()

    mine = await durable.open(wake=wake)
    other = await durable.open()
    for i in range(20):
        await mine.put(record(i))
    taken = await mine.take("inline", 20, time.time())
    for rec in taken:
        rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
        await mine.finish(rec)
    await mine.counts()  # a round trip: anything our commits sent has arrived by now
    await asyncio.sleep(0.1)
    assert wakes == []
    start = time.monotonic()
    await other.put(record())
    await asyncio.wait_for(woken.wait(), 2)
    assert wakes[0] - start < 0.5
    woken.clear()
    [rec] = await other.take("inline", 1, time.time())
    rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
    await other.finish(rec)  # a finish elsewhere wakes us too: a waiter here may want it
    await asyncio.wait_for(woken.wait(), 2)


async def test_close_puts_back_the_tasks_still_leased_counting_the_attempt(
    durable: Backend,
) -> None:
    store = await durable.open()
    for i in range(3):
        await store.put(record(i))
    await store.take("inline", 2, time.time())
    await store.close()
    again = await durable.open()
    taken = await again.take("inline", 10, time.time())
    assert sorted((r.args[0], r.retry) for r in taken) == [(0, 1), (1, 1), (2, 0)]


async def test_an_app_runs_tasks_and_a_producer_gets_results(durable: Backend) -> None:
    app = QueueTasks("worker", store=durable.make())

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task
    def join(*parts: str, sep: str = "-") -> str:
        return sep.join(parts)

    producer = QueueTasks("producer", store=durable.make())  # no dispatcher: adds only

    @producer.task(name="double")
    async def double_elsewhere(x: int) -> int:
        raise NotImplementedError

    async with app:
        assert app.store.shared
        done = await app.add_task("join", "a", "b", sep="+", timeout=5)
        assert done is not None and done.returning == "a+b"
        tasks = await asyncio.gather(*(app.add_task("double", i) for i in range(300)))
        assert await app.wait_idle(20)
        got = [await app.get(t.uuid) for t in tasks if t is not None]
        assert [t.returning for t in got if t is not None] == [2 * i for i in range(300)]
        waited = await producer.add_task("double", 21, timeout=5)  # finished by `app`
        assert waited is not None and (waited.status, waited.returning) == ("success", 42)
        assert not producer.running
    await producer.store.close()


async def test_an_app_leases_no_more_tasks_than_its_lane_has_room_for(backend: Backend) -> None:
    # A burst of adds while the lane's takes are in flight (a SQL store's take suspends):
    # each take must count the room the others already asked for, or tasks sit leased in
    # this app's inbox that another app with free workers could have run.
    from qtasks_mp.executors import ThreadExecutor

    app = QueueTasks("holder", store=backend.app_store(), executors={"thread": ThreadExecutor(2)})
    release = threading.Event()
    started = threading.Semaphore(0)

    @app.task(executor="thread")
    def hold(i: int) -> int:
        started.release()
        release.wait(30)
        return i

    async with app:
        try:
            await asyncio.gather(*(app.add_task("hold", i) for i in range(40)))
            for _ in range(2):  # both threads busy
                assert await asyncio.to_thread(started.acquire, True, 10)
            leased = []
            for _ in range(25):  # bounded (~0.5 s): no late take may push it past the room
                leased.append((await app.store.counts()).get("process", 0))
                await asyncio.sleep(0.02)
            assert max(leased) <= 2, leased
        finally:
            release.set()
        assert await app.wait_idle(20)
        assert (await app.store.counts()).get("success") == 40


async def test_a_delayed_retry_survives_a_restart(durable: Backend) -> None:
    runs: list[int] = []

    def make_app() -> QueueTasks:
        app = QueueTasks(store=durable.make())

        @app.task(retry=1)
        async def flaky() -> str:
            runs.append(len(runs))
            if len(runs) == 1:
                raise Retry(0.5)
            return "second time"

        return app

    first = make_app()
    async with first:
        task = await first.add_task("flaky")
        assert task is not None

        async def retried() -> bool:
            got = await first.get(task.uuid)
            return got is not None and got.retry == 1

        await until(retried, 5, "the first attempt to ask for a retry")
    second = make_app()
    async with second:
        pending = await second.get(task.uuid)
        assert pending is not None and pending.status == "new"
        done = await second.wait(task.uuid, timeout=5)
    assert done is not None and (done.status, done.returning, done.retry) == (
        "success",
        "second time",
        1,
    )
    assert runs == [0, 1]


async def test_a_task_interrupted_at_shutdown_runs_again_at_the_next_start(
    durable: Backend,
) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    def make_app() -> QueueTasks:
        app = QueueTasks(store=durable.make())
        app.config.shutdown_timeout = 0.05

        @app.task(name="report")
        async def report() -> str:
            started.set()
            await release.wait()
            return "sent"

        return app

    first = make_app()
    async with first:
        task = await first.add_task("report")
        await asyncio.wait_for(started.wait(), 5)
    assert task is not None
    interrupted = await first.get(task.uuid)
    assert interrupted is not None and interrupted.status == "new" and interrupted.retry == 1
    release.set()
    second = make_app()
    async with second:
        done = await second.wait(task.uuid, timeout=10)
    assert done is not None and done.status == "success" and done.returning == "sent"


# ------------------------------------------------------------------ unique tasks


def named(name: str, *args: Any, key: str | None = None, lane: str = "inline") -> TaskRecord:
    rec = TaskRecord(new_key(), name, lane, 0, args, {}, time.time())
    rec.unique_key = key
    return rec


async def test_a_unique_key_holds_while_its_task_is_new_or_process(backend: Backend) -> None:
    store = await backend.open()
    first = named("charge", 1, key="order-42")
    assert await store.put_unique(first) is None
    again = await store.put_unique(named("charge", 2, key="order-42"))
    assert again is not None and (again.uuid, again.args) == (first.uuid, (1,))
    assert await store.put_unique(named("email", key="order-42")) is None  # per task name
    [running] = [r for r in await store.take("inline", 10, time.time()) if r.uuid == first.uuid]
    held = await store.put_unique(named("charge", 3, key="order-42"))
    assert held is not None and held.uuid == first.uuid  # process: still held
    running.status, running.finished_at = TaskStatus.SUCCESS, time.time()
    await store.finish(running)
    later = named("charge", 4, key="order-42")
    assert await store.put_unique(later) is None  # ended: the key is free again
    got = await store.get(later.uuid)
    assert got is not None and got.unique_key == "order-42"
    counts = await store.counts()
    assert (counts["new"], counts["process"]) == (1, 1)  # the later "charge"; "email"


async def test_a_retry_keeps_its_unique_key(backend: Backend) -> None:
    store = await backend.open()
    rec = named("charge", key="k")
    assert await store.put_unique(rec) is None
    [taken] = await store.take("inline", 10, time.time())
    taken.retry, taken.status = 1, TaskStatus.NEW
    await store.put(taken)  # a retry put back
    held = await store.put_unique(named("charge", key="k"))
    assert held is not None and held.uuid == rec.uuid


async def test_a_requeue_takes_its_unique_key_back_only_when_free(backend: Backend) -> None:
    from qtasks_mp.errors import ArgumentValueError

    store = await backend.open()
    first = named("charge", 1, key="k")
    assert await store.put_unique(first) is None
    [taken] = await store.take("inline", 10, time.time())
    taken.status, taken.finished_at, taken.traceback = TaskStatus.ERROR, time.time(), "boom"
    await store.finish(taken)
    second = named("charge", 2, key="k")
    assert await store.put_unique(second) is None  # the key was free: a new holder
    with pytest.raises(ArgumentValueError, match=f"which task {second.uuid} holds"):
        await store.requeue(first.uuid, time.time())
    got = await store.get(first.uuid)
    assert got is not None and got.status == TaskStatus.ERROR  # untouched
    [run] = await store.take("inline", 10, time.time())
    run.status, run.finished_at = TaskStatus.SUCCESS, time.time()
    await store.finish(run)
    outcome = await store.requeue(first.uuid, time.time())
    assert outcome is not None and outcome[0] and outcome[1].unique_key == "k"
    held = await store.put_unique(named("charge", 3, key="k"))
    assert held is not None and held.uuid == first.uuid  # the requeued task holds it


async def test_history_and_headers_outlive_a_retry_put_back(backend: Backend) -> None:
    store = await backend.open()
    rec = named("charge", 1)
    rec.headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    await store.put(rec)
    [taken] = await store.take("inline", 10, time.time())
    assert taken.headers == rec.headers  # as add_task wrote them
    taken.status, taken.finished_at, taken.traceback = TaskStatus.ERROR, time.time(), "boom"
    await store.finish(taken)
    outcome = await store.requeue(rec.uuid, time.time())
    assert outcome is not None and outcome[0]
    [again] = await store.take("inline", 10, time.time())
    again.retry, again.traceback = 1, "retrying"
    await store.put(again)  # a retry put back
    got = await store.get(rec.uuid)
    assert got is not None and got.retry == 1 and got.headers == rec.headers
    assert [h["traceback"] for h in got.history] == ["boom"]


async def test_stores_racing_on_one_key_add_one_task(durable: Backend) -> None:
    a, b = await durable.open(), await durable.open()
    results = await asyncio.gather(
        *(s.put_unique(named("charge", i, key="order-42")) for i in range(20) for s in (a, b))
    )
    assert sum(r is None for r in results) == 1
    assert len({r.uuid for r in results if r is not None}) == 1
    assert (await a.counts())["new"] == 1


# ------------------------------------------------------------------ rate limits


async def test_a_rate_limit_hands_out_one_per_interval(backend: Backend) -> None:
    """Injected clock: `now` is what the dispatcher would pass."""
    store = await backend.open()
    store.limit_rate("slow", "inline", 0.1)
    for i in range(5):
        await store.put(named("slow", i))
    for i in range(3):
        await store.put(named("fast", i))
    now = 1000.0
    first = await store.take("inline", 10, now)
    assert sorted(r.task_name for r in first) == ["fast"] * 3 + ["slow"]
    assert await store.take("inline", 10, now + 0.05) == []  # not its turn yet
    assert [r.args for r in await store.take("inline", 10, now + 0.1)] == [(1,)]
    # late by 0.25 s: one start, not three to catch up (no burst)
    assert [r.args for r in await store.take("inline", 10, now + 0.35)] == [(2,)]
    assert await store.take("inline", 10, now + 0.4) == []
    assert [r.args for r in await store.take("inline", 10, now + 0.45)] == [(3,)]
    counts = await store.counts()
    assert (counts["new"], counts["process"]) == (1, 7)  # the last one waits in the store


async def test_a_rate_limit_holds_across_stores_on_the_same_data(durable: Backend) -> None:
    a, b = await durable.open(), await durable.open()
    for s in (a, b):
        s.limit_rate("slow", "inline", 1.0)
    for i in range(4):
        await a.put(named("slow", i))
    now = 2000.0
    assert len(await a.take("inline", 10, now)) == 1
    assert await b.take("inline", 10, now + 0.5) == []
    assert await a.take("inline", 10, now + 0.5) == []
    assert len(await b.take("inline", 10, now + 1.0)) == 1
    assert await a.take("inline", 10, now + 1.5) == []


async def test_a_rate_limited_task_waiting_wakes_the_app_at_its_turn(backend: Backend) -> None:
    woken = asyncio.Event()
    store = await backend.open(wake=woken.set)
    store.limit_rate("slow", "inline", 0.05)
    for i in range(2):
        await store.put(named("slow", i))
    now = time.time()
    assert len(await store.take("inline", 10, now)) == 1
    woken.clear()
    assert await store.take("inline", 10, now) == []
    await asyncio.wait_for(woken.wait(), 10)  # no poll: the store's own timer
    assert len(await store.take("inline", 10, max(time.time(), now + 0.05))) == 1


# ------------------------------------------------------------------ progress


async def test_progress_is_saved_while_running_and_kept_with_the_outcome(
    backend: Backend,
) -> None:
    store = await backend.open()
    await store.put(record(1))
    [rec] = await store.take("inline", 10, time.time())
    rec.progress = (3, 10, "third of ten")
    await store.save_progress([rec])
    got = await store.get(rec.uuid)
    assert got is not None and got.progress == (3, 10, "third of ten")
    if backend.kind != "memory":  # another process reads it from the file / the server
        peer = await backend.open()
        seen = await peer.get(rec.uuid)
        assert seen is not None and seen.progress == (3, 10, "third of ten")
    rec.progress = (10.0, None, None)
    rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
    await store.finish(rec)
    got = await store.get(rec.uuid)
    assert got is not None and got.progress == (10.0, None, None)
    assert got.snapshot(None).progress == (10.0, None, None)


# ------------------------------------------------------------------ cancel and requeue


async def test_cancel_of_a_queued_task_ends_it_and_it_is_never_taken(backend: Backend) -> None:
    from qtasks_mp.stores.base import CANCELLED_QUEUED, Cancelled

    store = await backend.open()
    now = time.time()
    ready, delayed, other = record("ready"), record("delayed", eta=now + 1), record("other")
    for rec in (ready, delayed, other):
        await store.put(rec)
    for rec in (ready, delayed):
        how, got = await store.cancel(rec.uuid, now) or (None, None)
        assert how is Cancelled.ENDED_NOW and got is not None
        assert (got.uuid, got.status, got.traceback) == (rec.uuid, "cancel", CANCELLED_QUEUED)
    taken = await store.take("inline", 10, now + 2)  # the delayed one is due by then
    assert [r.args[0] for r in taken] == ["other"]
    assert await store.next_eta("inline") is None
    stored = await store.get(delayed.uuid)
    assert stored is not None and stored.status == "cancel" and stored.finished_at == now
    assert (await store.counts())["cancel"] == 2
    assert await store.cancel(new_uuid(), now) is None


async def test_cancel_of_a_running_task_is_a_request_and_of_an_ended_one_nothing(
    backend: Backend,
) -> None:
    from qtasks_mp.stores.base import Cancelled

    store = await backend.open()
    await store.put(record(1))
    [rec] = await store.take("inline", 1, time.time())
    how, got = await store.cancel(rec.uuid, time.time()) or (None, None)
    assert how is Cancelled.REQUESTED and got is not None and got.status == "process"
    rec.status, rec.finished_at = TaskStatus.SUCCESS, time.time()
    await store.finish(rec)
    how, got = await store.cancel(rec.uuid, time.time()) or (None, None)
    assert how is Cancelled.ALREADY_ENDED and got is not None and got.status == "success"


async def test_requeue_runs_a_failed_task_again_keeping_its_history(backend: Backend) -> None:
    store = await backend.open()
    await store.put(record(1))
    await store.put(record(2))
    first, second = await store.take("inline", 2, time.time())
    first.status, first.retry, first.traceback = TaskStatus.ERROR, 2, "ValueError: one\n"
    first.finished_at = 100.0
    await store.finish(first)
    ok, again = await store.requeue(first.uuid, time.time()) or (None, None)
    assert ok is True and again is not None
    assert (again.status, again.retry, again.traceback, again.returning) == ("new", 0, None, None)
    assert again.history == (
        {"status": "error", "attempts": 3, "finished_at": 100.0, "traceback": "ValueError: one\n"},
    )
    second.status, second.finished_at = TaskStatus.SUCCESS, time.time()
    await store.finish(second)
    refused, as_is = await store.requeue(second.uuid, time.time()) or (None, None)
    assert refused is False and as_is is not None and as_is.status == "success"
    assert await store.requeue(new_uuid(), time.time()) is None
    [taken] = await store.take("inline", 10, time.time())  # runs again, same uuid
    assert (taken.uuid, taken.retry) == (first.uuid, 0)
    taken.status, taken.traceback, taken.finished_at = TaskStatus.CANCEL, "cancelled", 200.0
    await store.finish(taken)
    ok, third = await store.requeue(first.uuid, time.time()) or (None, None)
    assert ok and third is not None and [h["status"] for h in third.history] == ["error", "cancel"]
    stored = await store.get(first.uuid)
    assert stored is not None and stored.history == third.history and stored.status == "new"


async def test_requeue_puts_the_task_behind_those_already_queued(backend: Backend) -> None:
    store = await backend.open()
    await store.put(record("failed"))
    [failed] = await store.take("inline", 1, time.time())
    failed.status, failed.finished_at = TaskStatus.ERROR, time.time()
    await store.finish(failed)
    await store.put(record("queued"))
    await store.requeue(failed.uuid, time.time())
    taken = await store.take("inline", 10, time.time())
    assert [r.args[0] for r in taken] == ["queued", "failed"]


async def test_a_cancel_asked_elsewhere_reaches_the_store_holding_the_task(
    durable: Backend,
) -> None:
    from qtasks_mp.stores.base import Cancelled

    holder = await durable.open()
    seen: list[list[Any]] = []
    holder.watch_cancels(seen.append)
    other = await durable.open()
    await holder.put(record(1))
    [rec] = await holder.take("inline", 1, time.time())
    how, _ = await other.cancel(rec.uuid, time.time()) or (None, None)
    assert how is Cancelled.REQUESTED
    await until(lambda: seen, 5, "the holder's store to report the cancel")
    assert seen[0] == [rec.uuid]


async def test_a_retry_put_back_after_a_cancel_request_ends_cancelled(durable: Backend) -> None:
    holder = await durable.open()
    other = await durable.open()
    await holder.put(record(1))
    [rec] = await holder.take("inline", 1, time.time())
    await other.cancel(rec.uuid, time.time())
    rec.retry, rec.eta, rec.status = 1, time.time() + 60, TaskStatus.NEW  # a retry put back
    await holder.put(rec)

    async def cancelled() -> bool:
        got = await other.get(rec.uuid)
        return got is not None and got.status == "cancel"

    await until(cancelled, 5, "the retry to end cancelled")
    assert await holder.take("inline", 10, time.time() + 120) == []
