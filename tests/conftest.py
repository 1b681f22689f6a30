from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from qtasks_mp.asyncio import QueueTasks


@pytest.fixture
async def app() -> AsyncIterator[QueueTasks]:
    """A started async app; stopped (and checked for stragglers) after the test."""
    application = QueueTasks("test")
    application.config.shutdown_timeout = 2.0
    yield application
    await application.stop()
    assert not application.running


@pytest.fixture
def gate() -> asyncio.Event:
    """An event a task can block on; never set unless the test sets it."""
    return asyncio.Event()
