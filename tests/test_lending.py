"""A running task that waits for another task lends its slot meanwhile (lending.py).

Each test fills an executor with parents that wait for children only that executor
runs: before, the children never got a slot, and every parent's wait ran out.
"""

from __future__ import annotations

import asyncio

from polling import until

from qtasks_mp import AsyncTask, SyncTask
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.thread import ThreadExecutor

WAIT_S = 10  # a parent's wait for its child: runs out only if the child never runs


async def test_coroutines_waiting_for_their_children_lend_their_slots(app: QueueTasks) -> None:
    app.config.max_tasks_process = 2

    @app.task
    async def child(i: int) -> int:
        return i * 10

    @app.task(echo=True)
    async def waits_in_add_task(self: AsyncTask, i: int) -> int | None:
        done = await self.add_task("child", i, timeout=WAIT_S)
        return None if done is None else done.returning

    @app.task(echo=True)
    async def waits_for_the_task(self: AsyncTask, i: int) -> int | None:
        task = await self.add_task("child", i)
        assert task is not None
        done = await task.wait_result_async(timeout=WAIT_S)
        return None if done is None else done.returning

    @app.task(echo=True)
    async def gathers_two(self: AsyncTask, i: int) -> list[int | None]:
        both = await asyncio.gather(
            self.add_task("child", i, timeout=WAIT_S), self.add_task("child", i + 1, timeout=WAIT_S)
        )
        return [None if d is None else d.returning for d in both]

    await app.start()
    parents = [
        await app.add_task(name, i)
        for name in ("waits_in_add_task", "waits_for_the_task", "gathers_two")
        for i in (1, 2)
    ]
    done = [await app.wait(p.uuid, timeout=3 * WAIT_S) for p in parents if p is not None]
    assert [d.returning for d in done if d is not None] == [10, 20, 10, 20, [10, 20], [20, 30]]
    assert app.executors["inline"].active == 0  # every slot lent is back


async def test_threads_waiting_for_their_children_lend_their_slots(app: QueueTasks) -> None:
    app.config.thread_workers = 2

    @app.task
    def child(i: int) -> int:
        return i * 10

    @app.task(echo=True)
    def parent(self: SyncTask, i: int) -> int | None:
        done = self.add_task("child", i, timeout=WAIT_S)
        return None if done is None else done.returning

    @app.task(echo=True)
    def waits_for_the_task(self: SyncTask, i: int) -> int | None:
        task = self.add_task("child", i)
        assert task is not None
        done = task.wait_result(timeout=WAIT_S)
        return None if done is None else done.returning

    await app.start()
    parents = [
        await app.add_task(name, i) for name in ("parent", "waits_for_the_task") for i in (1, 2)
    ]
    done = [await app.wait(p.uuid, timeout=3 * WAIT_S) for p in parents if p is not None]
    assert [d.returning for d in done if d is not None] == [10, 20, 10, 20]
    pool = app.executors["thread"]
    assert isinstance(pool, ThreadExecutor)
    assert pool.active == 0
    # a thread was started for each slot lent; each went as its slot came back
    await until(lambda: pool.stats()["threads"] == 2, 10, "the threads back to 2")


async def test_a_wait_that_outlives_its_call_gives_back_nothing(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    """A parent that starts a wait and ends before it: its slot is back as it ends, and
    the wait's own end later does not give it back a second time."""
    app.config.max_tasks_process = 2
    waits: list[asyncio.Future[object]] = []

    @app.task
    async def slow_child() -> str:
        await gate.wait()
        return "late"

    @app.task(echo=True)
    async def parent(self: AsyncTask) -> str:
        waits.append(asyncio.ensure_future(self.add_task("slow_child", timeout=WAIT_S)))
        await asyncio.sleep(0)  # the wait has started (and lent the slot)
        return "gone"

    await app.start()
    done = await app.add_task("parent", timeout=WAIT_S)
    assert done is not None and done.returning == "gone"
    inline = app.executors["inline"]
    assert inline.active == 1  # the child, waiting for the gate; the parent's slot is back
    gate.set()
    child = await waits[0]
    assert child is not None and getattr(child, "returning", None) == "late"
    assert await app.wait_idle(WAIT_S)
    assert inline.active == 0


async def test_a_caller_driving_a_call_of_another_lane_lends_its_slot(app: QueueTasks) -> None:
    """An inline parent (the lane's only slot) waits for a thread child on an idle
    lane: its own task drives the child (eager.py), and the child waits for an inline
    grandchild. The parent's slot is lent meanwhile: the grandchild runs (before, it
    waited until its time ran out)."""
    app.config.max_tasks_process = 1

    @app.task
    async def grandchild() -> str:
        return "g"

    @app.task(executor="thread", echo=True)
    def tchild(self: SyncTask) -> str | None:
        done = self.add_task("grandchild", timeout=WAIT_S)
        return None if done is None else done.returning

    @app.task(echo=True)
    async def parent(self: AsyncTask) -> str | None:
        done = await self.add_task("tchild", timeout=3 * WAIT_S)
        return None if done is None else done.returning

    await app.start()
    done = await app.add_task("parent", timeout=4 * WAIT_S)
    assert done is not None and done.returning == "g"
    assert app.executors["inline"].stats()["lent"] == 0


async def test_while_a_parent_waits_it_still_counts_as_running(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    """A lent slot lets one more call run; the waiting one still runs: `active` (and
    the app's stats) count it, and the executor says how many slots are lent."""
    app.config.max_tasks_process = 1

    @app.task
    async def child() -> None:
        await gate.wait()

    @app.task(echo=True)
    async def parent(self: AsyncTask) -> None:
        await self.add_task("child", timeout=WAIT_S)

    await app.start()
    await app.add_task("parent")
    inline = app.executors["inline"]
    await until(lambda: inline.active == 2, 10, "the parent and its child running")
    assert inline.stats() == {"slots": 2, "active": 2, "lent": 1}
    gate.set()
    assert await app.wait_idle(WAIT_S)
    assert inline.stats() == {"slots": 1, "active": 0, "lent": 0}


def test_a_thread_pool_lends_at_most_max_lent_threads() -> None:
    """Each slot a blocked thread lends is an OS thread more: a bound, past which a
    wait keeps its slot (else 10,000 waiting parents would start 10,000 threads)."""
    pool = ThreadExecutor(max_workers=1)
    pool.max_lent = 2
    asyncio.run(pool.start())
    try:
        assert [pool.lend() for _ in range(3)] == [True, True, False]
        assert pool.stats()["lent"] == 2 and pool.slots == 3
        pool.give_back()
        pool.give_back()
        assert pool.slots == 1
    finally:
        asyncio.run(pool.aclose())
