"""Saving what running tasks say of their progress (`self.progress(...)`), coalesced.

    self.progress(3, 10)  ──> record.progress = (3, 10, None)     (the task's own record)
        (any thread)          saver.changed(record): marked dirty; the first mark of a
                              round schedules one save, `SAVE_EVERY_S` later, on the loop
    the save (the loop)   ──> store.save_progress(records still running)   one write
    the task ends         ──> store.finish(record) keeps its last progress too

So a task may call it per item, thousands of times a second: each call sets an
attribute and a dict entry; the store sees one write per round for every task that
reported. Not to be confused with `progress.py` (the progress line of `app.map`).

Hazard: `changed` runs in worker threads too. A mark made while a save swaps the
dirty dict may be lost; the value is not (it is on the record, and the next call
marks it again, or the finish saves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .stores.base import Store
from .task import TaskRecord, TaskStatus

log = logging.getLogger("qtasks_mp")

#: How often, at most, the progress of running tasks is written to the store.
SAVE_EVERY_S = 0.25


class ProgressSaver:
    """Owns the set of running tasks that reported progress, and their saving."""

    def __init__(self) -> None:
        #: tasks that reported progress, by uuid.int; finished ones are dropped at saves
        self.live: dict[int, TaskRecord] = {}
        self._dirty: dict[int, TaskRecord] = {}
        self._scheduled = False
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store, self._loop = store, loop
        self._scheduled = False  # a round scheduled on a loop that has gone never comes

    async def stop(self) -> None:
        """Save what is dirty now (a task still running keeps its last word), then stop."""
        self._loop = None
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        await self._save()
        self._store = None

    def changed(self, record: TaskRecord) -> None:
        """`record.progress` was just set. From any thread; cheap."""
        key = record.key
        self.live[key] = record
        if key in self._dirty:
            return
        self._dirty[key] = record
        if not self._scheduled:
            loop = self._loop
            if loop is None:
                return  # not running: the finish saves it
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.call_later, SAVE_EVERY_S, self._spawn)

    def _spawn(self) -> None:
        loop = self._loop
        if loop is None:
            self._scheduled = False
        elif self._task is not None:  # the last round still writes: come back after it
            loop.call_later(SAVE_EVERY_S, self._spawn)
        else:
            self._task = loop.create_task(self._round())

    async def _round(self) -> None:
        try:
            await self._save()
        finally:
            self._task = None

    async def _save(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        for key, record in list(self.live.items()):
            if record.status is not TaskStatus.PROCESS:
                del self.live[key]
        store = self._store
        running = [r for r in dirty.values() if r.status is TaskStatus.PROCESS]
        if store is None or not running:
            return
        try:
            await store.save_progress(running)
        except Exception as e:  # a progress report is not worth a task: say so once
            if not self._failing:
                log.warning("task store %r: saving the progress of tasks failed: %s", store, e)
            self._failing = True
        else:
            self._failing = False

    def running(self) -> dict[str, dict[str, Any]]:
        """The progress of running tasks: for `app.stats()["progress"]`, by uuid."""
        return {
            str(r.uuid): {"task": r.task_name, "done": p[0], "total": p[1], "note": p[2]}
            for r in list(self.live.values())
            if (p := r.progress) is not None and r.status is TaskStatus.PROCESS
        }
