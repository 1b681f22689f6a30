"""MemoryStore: ordering, delayed tasks, retention bounds, drop at shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qtasks_mp import MemoryStore, QueueConfig
from qtasks_mp.task import TaskRecord, TaskStatus, new_key


def record(priority: int = 0, lane: str = "inline", eta: float = 0.0) -> TaskRecord:
    rec = TaskRecord(new_key(), "t", lane, priority, (), {}, time.time())
    rec.eta = eta
    return rec


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), max_size=40), st.integers(1, 7))
def test_take_returns_priority_then_arrival_order(priorities: list[int], batch: int) -> None:
    async def scenario() -> list[tuple[int, int]]:
        store = MemoryStore()
        for i, p in enumerate(priorities):
            rec = record(p)
            rec.args = (i,)
            await store.put(rec)
        out: list[tuple[int, int]] = []
        while taken := await store.take("inline", batch, time.time()):
            assert len(taken) <= batch and all(r.status == TaskStatus.PROCESS for r in taken)
            out += [(r.priority, r.args[0]) for r in taken]
        return out

    out = asyncio.run(scenario())
    assert out == sorted((p, i) for i, p in enumerate(priorities))


async def test_lanes_are_separate_and_delayed_tasks_wait_for_their_eta() -> None:
    store = MemoryStore()
    now = time.time()
    await store.put(record(lane="thread"))
    later = record(eta=now + 60)
    await store.put(later)
    assert await store.take("inline", 10, now) == []
    assert await store.next_eta("inline") == later.eta
    assert len(await store.take("thread", 10, now)) == 1
    assert await store.take("inline", 10, now + 61) == [later]
    assert await store.next_eta("inline") is None


async def test_retention_keeps_at_most_count_and_drops_by_age() -> None:
    store = MemoryStore()
    config = QueueConfig()
    config.result_retention_count = 3
    config.result_retention_s = 100.0
    await store.open(config, lambda: None)
    recs = [record() for _ in range(5)]
    for i, rec in enumerate(recs):
        await store.put(rec)
        rec.status, rec.finished_at = TaskStatus.SUCCESS, 1000.0 + i
        await store.finish(rec)
    assert [await store.get(r.uuid) for r in recs[:2]] == [None, None]
    assert all([await store.get(r.uuid) for r in recs[2:]])
    late = record()
    await store.put(late)
    late.status, late.finished_at = TaskStatus.SUCCESS, 1103.5  # recs[2], [3] are now too old
    await store.finish(late)
    assert await store.get(recs[2].uuid) is None and await store.get(recs[3].uuid) is None
    assert await store.get(recs[4].uuid) is not None and await store.get(late.uuid) is not None


async def test_drop_queued_cancels_what_has_not_started() -> None:
    store = MemoryStore()
    a, b = record(), record(eta=time.time() + 60)
    await store.put(a)
    await store.put(b)
    assert await store.drop_queued() == 2
    got = await store.get(a.uuid)
    assert got is not None and got.status == TaskStatus.CANCEL
    assert (await store.counts())["cancel"] == 2
    assert await store.take("inline", 10, time.time() + 100) == []


# An operation: ("put", priority, delay) | ("take", batch) | ("cancel", which) | ("tick",)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(-2, 2), st.sampled_from([0.0, 0.0, 1.0, 2.0])),
        st.tuples(st.just("take"), st.integers(1, 4)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("tick")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_take_matches_a_sorted_model_across_puts_delays_cancels_and_takes(
    ops: list[tuple[Any, ...]],
) -> None:
    """Whatever the interleaving, `take` hands out the due, still-queued tasks in
    (priority, arrival) order: a delayed task that comes due goes before the tasks of
    its priority added after it, and an emptied priority does not block the others."""

    async def scenario() -> None:
        store = MemoryStore()
        now = 1000.0
        added: list[TaskRecord] = []  # in arrival order
        model: list[tuple[TaskRecord, float]] = []  # queued: (record, eta)
        for op in ops:
            if op[0] == "put":
                rec = record(op[1], eta=now + op[2] if op[2] else 0.0)
                rec.args = (len(added),)
                await store.put(rec)
                added.append(rec)
                model.append((rec, rec.eta))
            elif op[0] == "tick":
                now += 1.0
            elif op[0] == "cancel" and added:
                rec = added[op[1] % len(added)]
                await store.cancel(rec.uuid, now)
                model = [(r, eta) for r, eta in model if r is not rec]
            elif op[0] == "take":
                batch = op[1]
                due = sorted(
                    (r for r, eta in model if eta <= now), key=lambda r: (r.priority, r.args[0])
                )
                expected = due[:batch]
                taken = await store.take("inline", batch, now)
                assert [r.args[0] for r in taken] == [r.args[0] for r in expected]
                model = [(r, eta) for r, eta in model if r not in expected]
        rest = await store.take("inline", 1000, now + 10)
        left = sorted((r for r, _ in model), key=lambda r: (r.priority, r.args[0]))
        assert [r.args[0] for r in rest] == [r.args[0] for r in left]

    asyncio.run(scenario())


async def test_queued_per_lane_counts_ready_and_delayed_tasks() -> None:
    """The metrics' queued-per-lane gauge reads the store's queues (metrics.py)."""
    from qtasks_mp.metrics import memory_lane_counts

    store = MemoryStore()
    for rec in (record(0), record(3), record(eta=time.time() + 60), record(lane="thread")):
        await store.put(rec)
    assert memory_lane_counts(store) == {"inline": 3, "thread": 1}
    await store.take("inline", 1, time.time())
    assert memory_lane_counts(store) == {"inline": 2, "thread": 1}
