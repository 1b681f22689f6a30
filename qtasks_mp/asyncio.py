"""The async facade, for programs that own an event loop (aiogram, FastAPI, asyncio scripts).

from qtasks_mp.asyncio import QueueTasks
app = QueueTasks()
async with app:
    task = await app.add_task("send_reminder", 42, "hi", timeout=5)
"""

from __future__ import annotations

from .app import AppCore


class QueueTasks(AppCore):
    """The app, async: `await app.add_task(...)`, `async with app:`, `app.run_forever()`."""


__all__ = ["QueueTasks"]
