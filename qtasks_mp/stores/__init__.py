"""Stores: where accepted tasks wait and results are kept."""

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
