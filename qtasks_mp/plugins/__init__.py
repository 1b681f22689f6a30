"""QTasks' plugins (`qtasks.plugins`) that need no server: `Depends` and its scopes,
`State`, and pydantic models built from a task's arguments (`inject.py`). They act on
the task's parameters when the task runs; there is no plugin or trigger system here.
"""

from __future__ import annotations

from .depends import Depends, ScopeEnum
from .states import AsyncState, State, SyncState

__all__ = ["AsyncState", "Depends", "ScopeEnum", "State", "SyncState"]
