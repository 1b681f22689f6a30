"""Stores: where accepted tasks wait and results are kept."""

from __future__ import annotations

import os
from typing import Any

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "store_from"]


def store_from(value: Any) -> Store:
    """The store `QueueTasks(store=...)` means: None (memory), a Store, a path to a SQLite
    file, or a URL (`sqlite:///relative.db`, `sqlite:////absolute.db`, `memory://`,
    `postgresql://user@host/db` or `postgres://...`)."""
    if value is None:
        return MemoryStore()
    if isinstance(value, Store):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if value in ("memory://", ":memory:"):
            return MemoryStore()
        if value.startswith(("postgresql://", "postgres://")):
            from .postgres import PostgresStore  # imported only by apps that use it (asyncpg)

            return PostgresStore(value)
        path = value.removeprefix("sqlite:///") if value.startswith("sqlite:///") else None
        if path is None and "://" not in value:
            path = value
        if path:
            from .sqlite import SQLiteStore  # imported only by apps that use it

            return SQLiteStore(path)
    raise TypeError(
        "store= takes a Store, a path to a SQLite file, 'sqlite:///path.db' or "
        f"'postgresql://user@host/db', got {value!r}"
    )
