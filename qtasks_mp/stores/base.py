"""The `Store` interface: where accepted tasks wait, and where results are kept.

A store orders ready tasks per lane (one lane per executor) by priority, then by
arrival; holds delayed tasks (retries with backoff) until their ETA; and keeps
finished tasks within the retention bounds of the app's config. Every method is
async so that a durable store can do its I/O off the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from uuid import UUID

from ..config import QueueConfig
from ..task import TaskRecord


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
