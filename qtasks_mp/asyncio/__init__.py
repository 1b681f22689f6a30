"""The async facade, for programs that own an event loop (aiogram, FastAPI, asyncio scripts).

from qtasks_mp.asyncio import QueueTasks
app = QueueTasks()
async with app:
    task = await app.add_task("send_reminder", 42, "hi", timeout=5)
"""

from __future__ import annotations

from typing import Any

from ..app import AppCore
from ..routers import attach


class QueueTasks(AppCore):
    """The app, async: `await app.add_task(...)`, `async with app:`, `app.run_forever()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        attach(self)  # QTasks' shared tasks are tasks of every app


__all__ = ["QueueTasks"]
