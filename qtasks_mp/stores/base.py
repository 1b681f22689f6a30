"""The `Store` interface: where accepted tasks wait, and where results are kept.

A store orders ready tasks per lane (one lane per executor) by priority, then by
arrival; holds delayed tasks (retries with backoff) until their ETA; and keeps
finished tasks within the retention bounds of the app's config. Every method is
async so that a durable store can do its I/O off the loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any
from uuid import UUID

from ..config import QueueConfig
from ..errors import ArgumentValueError, SerializationError
from ..task import TaskRecord


class Cancelled(str, Enum):
    """What `Store.cancel` did."""

    #: it was queued (`new`): it is now ended `cancel` and will never be taken
    ENDED_NOW = "ended_now"
    #: it is running (`process`): the request is kept until its dispatcher ends it
    REQUESTED = "requested"
    #: it had already ended: nothing changed
    ALREADY_ENDED = "already_ended"


CANCELLED_QUEUED = "cancelled: cancelled before it started"


class Store(ABC):
    #: True when other processes may add tasks to the same store (a file, a server).
    shared: bool = False

    async def open(self, config: QueueConfig, wake: Callable[[], None]) -> None:
        """Prepare for use. `wake()` tells the dispatcher work arrived from elsewhere."""

    async def close(self) -> None:
        """Release files and connections. The store may be opened again."""

    @abstractmethod
    async def put(self, record: TaskRecord) -> None:
        """Accept a new task, or take back one that will be retried at `record.eta`.

        When it returns, the task is accepted: it must not be lost afterwards.
        """

    def put_now(self, record: TaskRecord) -> bool:
        """`put` without suspending, if this store can (it keeps tasks in this process's
        memory): True once accepted. False (the default): nothing was done; use `put`."""
        return False

    @abstractmethod
    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        """Up to `limit` tasks of `lane` that may run at `now`, best first, marked `process`."""

    @abstractmethod
    async def next_eta(self, lane: str) -> float | None:
        """When the earliest delayed task of `lane` becomes ready; None if there is none."""

    @abstractmethod
    async def finish(self, record: TaskRecord) -> None:
        """Keep the outcome of a finished task (status, result, traceback)."""

    def finish_now(self, record: TaskRecord) -> bool:
        """`finish` without suspending, if this store can (as `put_now`): True once
        kept. False (the default): nothing was done; use `finish`."""
        return False

    @abstractmethod
    async def get(self, uuid: UUID) -> TaskRecord | None:
        """The record of a task, or None if unknown or already dropped by retention."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """How many tasks the store holds, by status."""

    @abstractmethod
    async def drop_queued(self) -> int:
        """Forget the tasks that have not started (a memory store's fate at shutdown)."""

    # ------------------------------------------------------------ cancel and requeue
    # Concrete, so that a store written before them still works; the built-in stores
    # (memory, SQLite, PostgreSQL) implement them.

    async def cancel(self, uuid: UUID, now: float) -> tuple[Cancelled, TaskRecord] | None:
        """Cancel a task (None if unknown), atomically against `take`: a queued one ends
        `cancel` at once (traceback `CANCELLED_QUEUED`); for a running one, the request
        is kept and reported to the store that holds it (`watch_cancels`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot cancel tasks")

    async def requeue(self, uuid: UUID, now: float) -> tuple[bool, TaskRecord] | None:
        """Queue a task that ended `error` or `cancel` again under its uuid: retry 0, no
        result or traceback, the run that ended appended to `history`. (True, the new
        record); (False, the record as it is) for a task in another status; None if unknown."""
        raise NotImplementedError(f"{type(self).__name__} cannot requeue tasks")

    def watch_cancels(self, on_cancel: Callable[[list[UUID]], None]) -> None:
        """A shared store calls `on_cancel` (in the loop it was opened in, within a
        second) with the ids of tasks it leased to this process whose cancel another
        process asked for. A store of one process has nothing to report."""

    # ---------------------------------------------------------------- unique, rate, progress
    # Not abstract: a store of one's own works without them until a task uses them.

    async def put_unique(self, record: TaskRecord) -> TaskRecord | None:
        """Accept the new task `record` unless a task of the same name and
        `record.unique_key` is new or process; then accept nothing and return that
        task's record. Atomic: of two processes racing on one key, one adds the task."""
        raise NotImplementedError(
            f"{type(self).__name__} does not keep unique tasks (unique_key=, unique=True); "
            "use the memory, SQLite or PostgreSQL store"
        )

    def limit_rate(self, task_name: str, lane: str, interval_s: float) -> None:
        """Start `task_name`'s tasks (of `lane`) at least `interval_s` apart from now on.

        `take` then hands out at most one of them per `interval_s`, and leaves the rest
        waiting in the store; a shared store keeps the next allowed start in the store,
        so the limit holds across every process using it. Called by the app for each
        task with `rate_limit=` when it routes it (at start)."""
        rates: dict[str, dict[str, float]] = self.__dict__.setdefault("_rate_limits", {})
        rates.setdefault(lane, {})[task_name] = interval_s

    def rate_limits(self, lane: str) -> Mapping[str, float]:
        """The rate-limited tasks of `lane`: task name -> seconds between starts."""
        rates: dict[str, dict[str, float]] = self.__dict__.get("_rate_limits", {})
        return rates.get(lane, _NONE)

    async def save_progress(self, records: list[TaskRecord]) -> None:
        """Keep the `progress` of these running tasks, so that `get` (in any process)
        shows it. Called at most a few times a second, with the records whose progress
        changed since (the latest value wins). The memory store's records are the
        running ones: nothing to do."""


_NONE: Mapping[str, float] = {}


class TurnTimer:
    """One loop timer that calls `wake` at the earliest time asked for: when the next
    rate-limited task may start (`at`), so the app takes it then. Not polling: set only
    while such a task waits, and once per turn."""

    def __init__(self) -> None:
        self.wake: Callable[[], None] = _nothing
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def at(self, when: float, now: float) -> None:
        """Wake at `when` (a `time.time()`, as the `now` given to `take`) unless a wake
        comes sooner. Counted from the clock, not from `now`: `take` may have spent a
        while in the store since `now` was read, and every millisecond late is a
        millisecond lost to the rate."""
        if self._handle is not None:
            if self._at <= when:
                return
            self._handle.cancel()
        self._at = when
        delay = max(0.0, when - max(now, time.time()))
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.wake()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _nothing() -> None:
    pass


def unique_key_held(record: TaskRecord, holder: UUID) -> ArgumentValueError:
    """The error of a requeue whose task's unique key another task holds now."""
    return ArgumentValueError(
        f"app.requeue: task {record.task_name!r} ({record.uuid}) has unique_key "
        f"{record.unique_key!r}, which task {holder} holds now (queued or running); "
        "requeue it after that one ends, or add a new task"
    )


def record_with_history(
    from_row: Callable[[Any], TaskRecord], row: tuple[Any, ...], uuid: UUID
) -> TaskRecord:
    """The record of a SQL store's row of `COLUMNS, history` (`from_row` decodes the
    columns); raises `SerializationError` naming the task when they cannot be decoded."""
    try:
        record = from_row(row[:-1])
    except Exception as e:
        raise SerializationError(
            f"task {row[2]!r} ({uuid}): its stored arguments or result cannot be "
            f"decoded here: {type(e).__name__}: {e}"
        ) from e
    if row[-1]:
        record.history = tuple(json.loads(row[-1]))
    return record


def ignore_cancels(uuids: list[UUID]) -> None:
    """The `watch_cancels` callback until the app gives one."""
