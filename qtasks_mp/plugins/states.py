"""QTasks' `State`: data that tasks of this process hand to each other, by state class.

A task parameter annotated with a `State` subclass receives that state. Every task
that names the same class sees the same data (a dict under a lock); it lives in the
process that runs the tasks (not in the store: it does not survive a restart).
`AsyncState`'s methods are awaited, `SyncState`'s (and `State`'s) are plain calls.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar


class State:
    """`get`, `get_all`, `set`, `update`, `delete`, `clear` over the class's data."""

    _data: ClassVar[dict[str, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._data = {}  # each state class has data of its own
        cls._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def get_all(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._data)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def update(self, **values: Any) -> dict[str, Any]:
        with self._lock:
            self._data.update(values)
            return dict(self._data)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


SyncState = State


class AsyncState(State):
    """The same data access, awaited (nothing in it blocks for long: a lock held briefly)."""

    async def get(self, key: str, default: Any = None) -> Any:
        return State.get(self, key, default)

    async def get_all(self) -> dict[str, Any]:  # type: ignore[override]
        return State.get_all(self)

    async def set(self, key: str, value: Any) -> None:  # type: ignore[override]
        State.set(self, key, value)

    async def update(self, **values: Any) -> dict[str, Any]:  # type: ignore[override]
        return State.update(self, **values)

    async def delete(self, key: str) -> None:  # type: ignore[override]
        State.delete(self, key)

    async def clear(self) -> None:  # type: ignore[override]
        State.clear(self)


__all__ = ["AsyncState", "State", "SyncState"]
