"""A task's record (what the store keeps) and `Task`, the snapshot users get back."""

from __future__ import annotations

import os
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID, SafeUUID

if TYPE_CHECKING:
    from .context import TaskHost


class TaskStatus(str, Enum):
    """QTasks' statuses. A `str` subclass: `task.status == "success"` works."""

    NEW = "new"
    PROCESS = "process"
    SUCCESS = "success"
    ERROR = "error"
    CANCEL = "cancel"

    def __str__(self) -> str:
        return self.value


FINISHED = frozenset({TaskStatus.SUCCESS, TaskStatus.ERROR, TaskStatus.CANCEL})


# The version-4 UUID bits: byte 6 is 0100xxxx (version 4), byte 8 is 10xxxxxx (RFC 4122).
_VERSION_BYTE = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_BYTE = bytes((b & 0x3F) | 0x80 for b in range(256))
_set_int = UUID.__dict__["int"].__set__  # the slots UUID.__init__ fills
_set_safe = UUID.__dict__["is_safe"].__set__
_keys: list[int] = []


def _reset_keys() -> None:
    _keys.clear()


os.register_at_fork(after_in_child=_reset_keys)  # a child must not reuse the parent's ids


def _make_keys(n: int = 256) -> list[int]:
    """`n` random version-4 UUIDs, as ints (`uuid.int`), from one os.urandom call.

    The version and variant bits are set in all `n` at once (two `translate`s of
    strided slices).
    """
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_BYTE)
    raw[8::16] = raw[8::16].translate(_VARIANT_BYTE)
    from_bytes = int.from_bytes
    return [from_bytes(raw[i : i + 16], "big") for i in range(0, 16 * n, 16)]


def new_key() -> int:
    """A random (version 4) UUID as an int, as `uuid.uuid4().int`, about 6x cheaper.

    A task is known by this int in the app (the store's and the waiters' maps); its
    `UUID` object is made only when asked for (`TaskRecord.uuid`, `Task.uuid`): a
    waiting task then holds one object fewer for the garbage collector to walk."""
    while True:  # (each of pop and extend is atomic: threads may race between them)
        try:
            return _keys.pop()
        except IndexError:
            _keys.extend(_make_keys())


def uuid_of(key: int) -> UUID:
    """`UUID(int=key)` for a `key` known to be a UUID's, built the way `UUID.__init__`
    stores its fields, without the argument checks that cost more than the rest."""
    u = object.__new__(UUID)
    _set_int(u, key)
    _set_safe(u, SafeUUID.unknown)
    return u


def new_uuid() -> UUID:
    """A random (version 4) UUID, as `uuid.uuid4()`."""
    return uuid_of(new_key())


class TaskProgress(NamedTuple):
    """What a running task said of its progress last (`self.progress(done, total, note)`)."""

    done: float
    total: float | None = None
    note: str | None = None


class TaskRecord:
    """The mutable record a store keeps. Times are `time.time()` floats.

    `lane` is the name of the executor that runs it; `retry` counts retries done;
    `eta` is the earliest time it may run (0 = now); `seq` keeps FIFO order among
    equal priorities. `key` is the task's uuid as an int (`uuid.int`): how the app's
    maps know it; `uuid` is made from it on first use. `unique_key`: while a task of
    the same name and key is new or process, adding another returns that one. `progress`: the latest
    `(done, total, note)` the task reported, or None. `history` holds the earlier
    runs of a requeued task (see `history_entry`), oldest first; a store reads it only
    for `get`. `headers`: string pairs that travel with the task from `add_task` to its
    runs (a middleware's `on_add` writes them, e.g. the W3C trace context), or None.
    """

    __slots__ = (
        "_uuid",
        "args",
        "created_at",
        "eta",
        "finished_at",
        "headers",
        "history",
        "key",
        "kwargs",
        "lane",
        "priority",
        "progress",
        "retry",
        "returning",
        "seq",
        "started_at",
        "status",
        "task_name",
        "traceback",
        "unique_key",
        "updated_at",
    )

    def __init__(
        self,
        key: int,
        task_name: str,
        lane: str,
        priority: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        now: float,
    ) -> None:
        self.key = key
        self._uuid: UUID | None = None
        self.task_name = task_name
        self.lane = lane
        self.priority = priority
        self.args = args
        self.kwargs = kwargs
        self.status = TaskStatus.NEW
        self.created_at = now
        self.updated_at = now
        self.started_at = 0.0
        self.finished_at = 0.0
        self.eta = 0.0
        self.retry = 0
        self.returning: Any = None
        self.traceback: str | None = None
        self.seq = 0
        self.unique_key: str | None = None
        self.progress: tuple[float, float | None, str | None] | None = None
        self.history: tuple[dict[str, Any], ...] = ()
        self.headers: dict[str, str] | None = None

    @property
    def uuid(self) -> UUID:
        """The task's id (`key` is its `.int`); made on first use."""
        u = self._uuid
        if u is None:
            u = self._uuid = uuid_of(self.key)
        return u

    def snapshot(self, host: TaskHost | None) -> Task:
        return Task(self, host)


def history_entry(
    status: str, retry: int, finished_at: float, traceback: str | None
) -> dict[str, Any]:
    """What `requeue` keeps of a run that ended `error` or `cancel`: its status, the
    attempts it made, when it ended and its traceback. Plain data (JSON in the stores)."""
    return {
        "status": str(status),
        "attempts": retry + 1,
        "finished_at": finished_at,
        "traceback": traceback,
    }


class Task:
    """A task as it was when this object was made, with QTasks' fields.

    It does not change afterwards: `wait_result()` / `await wait_result_async()` or
    `app.get(uuid)` give a fresh one. `retry` counts the retries done so far.
    `created_at` / `updated_at` are `datetime`s (local time). `history`: the earlier
    runs of a requeued task, a tuple of dicts, oldest first (`status`, `attempts`,
    `finished_at`, `traceback` each; see `app.requeue`).
    """

    __slots__ = (
        "_created",
        "_host",
        "_key",
        "_progress",
        "_updated",
        "_uuid",
        "args",
        "history",
        "kwargs",
        "priority",
        "retry",
        "returning",
        "status",
        "task_name",
        "traceback",
        "unique_key",
    )

    def __init__(self, record: TaskRecord, host: TaskHost | None = None) -> None:
        self.status: str = record.status
        self._key = record.key
        self._uuid = record._uuid  # made on first use, as the record's
        self.priority: int = record.priority
        self.task_name: str = record.task_name
        self.args: tuple[Any, ...] = record.args
        self.kwargs: dict[str, Any] = record.kwargs
        self.returning: Any = record.returning
        self.traceback: str | None = record.traceback
        self.retry: int = record.retry
        self.unique_key: str | None = record.unique_key
        self._progress = record.progress
        self.history: tuple[dict[str, Any], ...] = record.history
        self._created = record.created_at
        self._updated = record.updated_at
        self._host = host  # what it asks to wait: the app, through a small protocol

    @property
    def uuid(self) -> UUID:
        u = self._uuid
        if u is None:
            u = self._uuid = uuid_of(self._key)
        return u

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickling; a `Task` pickled by a version before 2026-12-04 kept `uuid` (a
        `UUID`) where this one keeps `_key` (its int) and `_uuid`."""
        _, slots = state
        if "uuid" in slots:
            u = slots.pop("uuid")
            slots["_uuid"], slots["_key"] = u, u.int
        for name, value in slots.items():
            object.__setattr__(self, name, value)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self._created)

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self._updated)

    @property
    def progress(self) -> TaskProgress | None:
        """The latest progress the task reported (`.done`, `.total`, `.note`), or None."""
        p = self._progress
        return None if p is None else TaskProgress(*p)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def __repr__(self) -> str:
        out = (
            f"returning={self.returning!r}"
            if self.status != TaskStatus.ERROR
            else (f"error={(self.traceback or '').strip().splitlines()[-1:]!r}")
        )
        return (
            f"Task(status={str(self.status)!r}, task_name={self.task_name!r}, "
            f"uuid={str(self.uuid)!r}, priority={self.priority}, retry={self.retry}, {out})"
        )

    async def wait_result_async(self, timeout: float | None = None) -> Task | None:
        """Wait (no polling) until the task ends; the finished `Task`, or None on timeout."""
        return await self._require_host().wait(self.uuid, timeout)

    def wait_result(self, timeout: float | None = None) -> Task | None:
        """Blocking form of `wait_result_async`, for threads other than the app's loop."""
        host = self._require_host()
        return host.call_from_thread(host.wait(self.uuid, timeout))

    async def cancel_async(self) -> bool:
        """`await app.cancel(this task)`: True if it was queued or running and is now
        ended `cancel`; False if it had already ended."""
        return await self._require_host().cancel(self.uuid)

    def cancel(self) -> bool:
        """Blocking form of `cancel_async`, for threads other than the app's loop."""
        host = self._require_host()
        return host.call_from_thread(host.cancel(self.uuid))

    def _require_host(self) -> TaskHost:
        if self._host is None:
            raise RuntimeError(f"task {self.task_name!r} is not attached to an app")
        return self._host
