"""The `Store` interface: where accepted tasks wait, and where results are kept.

A store orders ready tasks per lane (one lane per executor) by priority, then by
arrival; holds delayed tasks (retries with backoff) until their ETA; and keeps
finished tasks within the retention bounds of the app's config. Every method is
async so that a durable store can do its I/O off the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from uuid import UUID

from ..config import QueueConfig
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

    @abstractmethod
    async def take(self, lane: str, limit: int, now: float) -> list[TaskRecord]:
        """Up to `limit` tasks of `lane` that may run at `now`, best first, marked `process`."""

    @abstractmethod
    async def next_eta(self, lane: str) -> float | None:
        """When the earliest delayed task of `lane` becomes ready; None if there is none."""

    @abstractmethod
    async def finish(self, record: TaskRecord) -> None:
        """Keep the outcome of a finished task (status, result, traceback)."""

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
