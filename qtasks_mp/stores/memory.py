"""`MemoryStore`: the default store. Fast, and gone with the process.

Queued tasks of a lane wait in one FIFO per priority (`_Ready`): adding and taking
cost O(1) and no object beyond the record, however many wait (a gather of 50,000
waited `add_task` queues 50,000 at once); only the priorities in use are kept in a
heap. Delayed tasks wait in a second heap per lane ordered by ETA, and join their FIFO
in arrival order when due. Finished
tasks stay in a dict for `get()` and are dropped oldest-first past the retention
bounds; the bookkeeping is O(1) per task, so the store stays flat under any load.

Rate-limited tasks (`limit_rate`) that `take` meets before their turn move to a heap
of their own per task name and wait there; `take` hands out one each time the next
allowed start (kept per task name) has come, and sets one loop timer to wake the app
then. Unique tasks are found by (task name, key) in a dict, entries dropped as their
task finishes.

A cancelled queued task stays in its heap, ended: `take` drops it when it comes up
(one identity test per task taken, instead of an O(n) removal per cancel).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from itertools import count
from uuid import UUID

from ..config import QueueConfig
from ..task import TaskRecord, TaskStatus, history_entry
from .base import CANCELLED_QUEUED, Cancelled, Store, TurnTimer, unique_key_held

_UNFINISHED = (TaskStatus.NEW, TaskStatus.PROCESS)


def _arrival(record: TaskRecord) -> int:
    return record.seq


class _Ready:
    """The queued tasks of one lane in (priority, arrival) order: a FIFO per priority,
    and a heap of the priorities that have one. An emptied FIFO stays until a task of
    a lower priority number is taken past it, so a lane of one priority keeps one."""

    __slots__ = ("count", "fifos", "order")

    def __init__(self) -> None:
        self.fifos: dict[int, deque[TaskRecord]] = {}
        self.order: list[int] = []  # heap of the keys of `fifos`
        self.count = 0

    def push(self, record: TaskRecord) -> None:
        fifo = self.fifos.get(record.priority)
        if fifo is None:
            fifo = self.fifos[record.priority] = deque()
            heapq.heappush(self.order, record.priority)
        if fifo and fifo[-1].seq > record.seq:  # a delayed task come due: by arrival
            bisect.insort(fifo, record, key=_arrival)
        else:
            fifo.append(record)
        self.count += 1

    def pop(self) -> TaskRecord:
        """The first task; only when `count` > 0."""
        order, fifos = self.order, self.fifos
        while True:
            fifo = fifos[order[0]]
            if fifo:
                self.count -= 1
                return fifo.popleft()
            del fifos[heapq.heappop(order)]

    def __len__(self) -> int:
        """Queued here, cancelled ones not yet dropped included (metrics.py reads it,
        from the dashboard's thread: one int read)."""
        return self.count

    def __iter__(self) -> Iterator[TaskRecord]:
        for fifo in self.fifos.values():
            yield from fifo

    def clear(self) -> None:
        self.fifos.clear()
        self.order.clear()
        self.count = 0


class MemoryStore(Store):
    shared = False

    def __init__(self) -> None:
        self._ready: dict[str, _Ready] = {}
        self._delayed: dict[str, list[tuple[float, int, TaskRecord]]] = {}
        self._records: dict[int, TaskRecord] = {}  # by uuid.int: UUID hashes in Python
        self._finished: deque[TaskRecord] = deque()
        self._seq = count()
        self._config = QueueConfig()
        # unique tasks: (task name, key) -> the record added last with that key
        self._unique: dict[tuple[str, str], TaskRecord] = {}
        # rate limits: lane -> {task name: seconds between starts}; per task name, the
        # next allowed start and the tasks that wait for it
        self._limited: dict[str, dict[str, float]] = {}
        self._next_at: dict[str, float] = {}
        self._held: dict[str, list[tuple[int, int, TaskRecord]]] = {}
        self._turns = TurnTimer()
        # put_now / finish_now do what put / finish do, unless a subclass changed those
        cls = type(self)
        self._put_now = cls.put is MemoryStore.put
        self._finish_now = cls.finish is MemoryStore.finish

    async def open(self, config: QueueConfig, wake: Callable[[], None]) -> None:
        self._config = config
        self._turns.wake = wake

    async def close(self) -> None:
        self._turns.cancel()

    async def put(self, record: TaskRecord) -> None:
        self._put(record)

    def put_now(self, record: TaskRecord) -> bool:
        if not self._put_now:
            return False
        self._put(record)
        return True

    def _put(self, record: TaskRecord) -> None:
        record.seq = seq = next(self._seq)
        self._records[record.key] = record
        if record.eta > 0.0:
            heapq.heappush(self._delayed.setdefault(record.lane, []), (record.eta, seq, record))
        else:
            ready = self._ready.get(record.lane)
            if ready is None:
                ready = self._ready[record.lane] = _Ready()
            ready.push(record)

    def put_running(self, record: TaskRecord) -> None:
        """Keep `record` as taken already (status process): a sync caller's direct call
        (executors/process/direct.py), never handed out by `take`."""
        record.seq = next(self._seq)
        record.status = TaskStatus.PROCESS
        self._records[record.key] = record

    async def put_unique(self, record: TaskRecord) -> TaskRecord | None:
        assert record.unique_key is not None
        key = (record.task_name, record.unique_key)
        found = self._unique.get(key)
        if found is not None and found.status in _UNFINISHED:
            return found
        self._unique[key] = record
        await self.put(record)
        return None

    def limit_rate(self, task_name: str, lane: str, interval_s: float) -> None:
        super().limit_rate(task_name, lane, interval_s)
        self._limited.setdefault(lane, {})[task_name] = interval_s

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        if self._limited and lane in self._limited:
            return self._take_limited(lane, limit, now, self._limited[lane])
        ready = self._ready.get(lane)
        delayed = self._delayed.get(lane)
        if delayed:
            if ready is None:
                ready = self._ready[lane] = _Ready()
            self._due(delayed, ready, now)
        out: list[TaskRecord] = []
        if ready is None:
            return out
        pop = ready.pop
        new = TaskStatus.NEW
        while ready.count and len(out) < limit:
            rec = pop()
            if rec.status is not new:  # cancelled while queued
                continue
            rec.status = TaskStatus.PROCESS
            out.append(rec)
        return out

    def _take_limited(
        self, lane: str, limit: int, now: float, limits: dict[str, float]
    ) -> list[TaskRecord]:
        """`take` for a lane with rate-limited tasks: at most one of each per turn."""
        ready = self._ready.get(lane)
        if ready is None:
            ready = self._ready[lane] = _Ready()
        delayed = self._delayed.get(lane)
        if delayed:
            self._due(delayed, ready, now)
        out: list[TaskRecord] = []
        next_at, held = self._next_at, self._held
        for name, interval_s in limits.items():  # those already waiting for their turn
            heap = held.get(name)
            while heap and heap[0][2].status is not TaskStatus.NEW:  # cancelled meanwhile
                heapq.heappop(heap)
            if heap and len(out) < limit and next_at.get(name, 0.0) <= now:
                rec = heapq.heappop(heap)[2]
                rec.status = TaskStatus.PROCESS
                out.append(rec)
                next_at[name] = max(next_at.get(name, 0.0), now) + interval_s
        while ready.count and len(out) < limit:
            rec = ready.pop()
            if rec.status is not TaskStatus.NEW:  # cancelled while queued
                continue
            interval = limits.get(rec.task_name)
            if interval is not None:
                if next_at.get(rec.task_name, 0.0) > now:  # not its turn: wait aside
                    item = (rec.priority, rec.seq, rec)
                    heapq.heappush(held.setdefault(rec.task_name, []), item)
                    continue
                next_at[rec.task_name] = max(next_at.get(rec.task_name, 0.0), now) + interval
            rec.status = TaskStatus.PROCESS
            out.append(rec)
        turns = [next_at[name] for name in limits if held.get(name)]
        if turns:  # wake the app when the first of them may start
            self._turns.at(min(turns), now)
        return out

    @staticmethod
    def _due(delayed: list[tuple[float, int, TaskRecord]], ready: _Ready, now: float) -> None:
        """Move the delayed tasks whose ETA has come to `ready`."""
        while delayed and delayed[0][0] <= now:
            rec = heapq.heappop(delayed)[2]
            rec.eta = 0.0
            ready.push(rec)

    async def next_eta(self, lane: str) -> float | None:
        delayed = self._delayed.get(lane)
        while delayed and delayed[0][2].status is not TaskStatus.NEW:
            heapq.heappop(delayed)  # a cancelled retry: no wake-up for it
        return delayed[0][0] if delayed else None

    async def finish(self, record: TaskRecord) -> None:
        self._finish(record)

    def finish_now(self, record: TaskRecord) -> bool:
        if not self._finish_now:
            return False
        self._finish(record)
        return True

    def _finish(self, record: TaskRecord) -> None:
        if record.unique_key is not None:
            key = (record.task_name, record.unique_key)
            if self._unique.get(key) is record:
                del self._unique[key]
        finished = self._finished
        finished.append(record)
        config = self._config
        if len(finished) > config.result_retention_count or (
            finished[0].finished_at < record.finished_at - config.result_retention_s
        ):
            self._trim(record.finished_at)

    def _trim(self, now: float) -> None:
        finished = self._finished
        max_count = self._config.result_retention_count
        while len(finished) > max_count:
            self._records.pop(finished.popleft().key, None)
        horizon = now - self._config.result_retention_s
        while finished and finished[0].finished_at < horizon:
            self._records.pop(finished.popleft().key, None)

    async def cancel(self, uuid: UUID, now: float) -> tuple[Cancelled, TaskRecord] | None:
        rec = self._records.get(uuid.int)
        if rec is None:
            return None
        if rec.status is TaskStatus.NEW:
            rec.status = TaskStatus.CANCEL
            rec.updated_at = rec.finished_at = now
            rec.traceback = CANCELLED_QUEUED
            self._finished.append(rec)
            self._trim(now)
            return Cancelled.ENDED_NOW, rec
        if rec.status is TaskStatus.PROCESS:  # held by this process's dispatcher
            return Cancelled.REQUESTED, rec
        return Cancelled.ALREADY_ENDED, rec

    async def requeue(self, uuid: UUID, now: float) -> tuple[bool, TaskRecord] | None:
        rec = self._records.get(uuid.int)
        if rec is None:
            return None
        if rec.status not in (TaskStatus.ERROR, TaskStatus.CANCEL):
            return False, rec
        if rec.unique_key is not None:
            key = (rec.task_name, rec.unique_key)
            holder = self._unique.get(key)
            if holder is not None and holder is not rec and holder.status in _UNFINISHED:
                raise unique_key_held(rec, holder.uuid)
            self._unique[key] = rec
        with contextlib.suppress(ValueError):  # O(retention): not dropped while queued
            self._finished.remove(rec)
        rec.history = (
            *rec.history,
            history_entry(rec.status, rec.retry, rec.finished_at, rec.traceback),
        )
        rec.status = TaskStatus.NEW
        rec.retry = 0
        rec.eta = rec.started_at = rec.finished_at = 0.0
        rec.updated_at = now
        rec.returning = rec.traceback = None
        await self.put(rec)
        return True, rec

    async def get(self, uuid: UUID) -> TaskRecord | None:
        return self._records.get(uuid.int)

    async def counts(self) -> dict[str, int]:
        by_status = Counter(str(r.status) for r in self._records.values())
        return {s.value: by_status.get(s.value, 0) for s in TaskStatus}

    async def drop_queued(self) -> int:
        queued: list[TaskRecord] = []
        for ready in self._ready.values():
            queued.extend(ready)
            ready.clear()
        for heaps in (self._delayed, self._held):
            for heap in heaps.values():
                queued.extend(item[2] for item in heap)
                heap.clear()
        dropped = 0
        for rec in queued:
            if rec.status is not TaskStatus.NEW:  # cancelled while queued
                continue
            rec.status = TaskStatus.CANCEL
            rec.updated_at = rec.finished_at = time.time()
            rec.traceback = "cancelled: the app stopped before the task started"
            self._finished.append(rec)
            dropped += 1
        self._trim(time.time())
        return dropped
