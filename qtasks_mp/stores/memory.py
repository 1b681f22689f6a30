"""`MemoryStore`: the default store. Fast, and gone with the process.

Queued tasks live in one heap per lane, ordered by (priority, arrival); delayed tasks
in a second heap per lane ordered by ETA, moved to the ready heap when due. Finished
tasks stay in a dict for `get()` and are dropped oldest-first past the retention
bounds; the bookkeeping is O(1) per task, so the store stays flat under any load.

A cancelled queued task stays in its heap, ended: `take` drops it when it comes up
(one identity test per task taken, instead of an O(n) removal per cancel).
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import count
from uuid import UUID

from ..config import QueueConfig
from ..task import TaskRecord, TaskStatus, history_entry
from .base import CANCELLED_QUEUED, Cancelled, Store


class MemoryStore(Store):
    shared = False

    def __init__(self) -> None:
        self._ready: dict[str, list[tuple[int, int, TaskRecord]]] = {}
        self._delayed: dict[str, list[tuple[float, int, TaskRecord]]] = {}
        self._records: dict[int, TaskRecord] = {}  # by uuid.int: UUID hashes in Python
        self._finished: deque[TaskRecord] = deque()
        self._seq = count()
        self._config = QueueConfig()

    async def open(self, config: QueueConfig, wake: Callable[[], None]) -> None:
        self._config = config

    async def put(self, record: TaskRecord) -> None:
        record.seq = seq = next(self._seq)
        self._records[record.uuid.int] = record
        if record.eta > 0.0:
            heapq.heappush(self._delayed.setdefault(record.lane, []), (record.eta, seq, record))
        else:
            heapq.heappush(self._ready.setdefault(record.lane, []), (record.priority, seq, record))

    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        ready = self._ready.get(lane)
        delayed = self._delayed.get(lane)
        if delayed:
            if ready is None:
                ready = self._ready[lane] = []
            while delayed and delayed[0][0] <= now:
                _, seq, rec = heapq.heappop(delayed)
                rec.eta = 0.0
                heapq.heappush(ready, (rec.priority, seq, rec))
        out: list[TaskRecord] = []
        if not ready:
            return out
        pop = heapq.heappop
        new = TaskStatus.NEW
        while ready and len(out) < limit:
            rec = pop(ready)[2]
            if rec.status is not new:  # cancelled while queued
                continue
            rec.status = TaskStatus.PROCESS
            out.append(rec)
        return out

    async def next_eta(self, lane: str) -> float | None:
        delayed = self._delayed.get(lane)
        while delayed and delayed[0][2].status is not TaskStatus.NEW:
            heapq.heappop(delayed)  # a cancelled retry: no wake-up for it
        return delayed[0][0] if delayed else None

    async def finish(self, record: TaskRecord) -> None:
        self._finished.append(record)
        self._trim(record.finished_at)

    def _trim(self, now: float) -> None:
        finished = self._finished
        max_count = self._config.result_retention_count
        while len(finished) > max_count:
            self._records.pop(finished.popleft().uuid.int, None)
        horizon = now - self._config.result_retention_s
        while finished and finished[0].finished_at < horizon:
            self._records.pop(finished.popleft().uuid.int, None)

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
        dropped = 0
        for heaps in (self._ready, self._delayed):
            for heap in heaps.values():
                for item in heap:
                    rec = item[2]
                    if rec.status is not TaskStatus.NEW:  # cancelled while queued
                        continue
                    rec.status = TaskStatus.CANCEL
                    rec.updated_at = rec.finished_at = time.time()
                    rec.traceback = "cancelled: the app stopped before the task started"
                    self._finished.append(rec)
                    dropped += 1
                heap.clear()
        self._trim(time.time())
        return dropped
