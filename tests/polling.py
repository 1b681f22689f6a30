"""Bounded waits on what a test cannot be told about (a process's exit, a row another
process wrote, a count a pool keeps): poll until it holds, fail naming it at the deadline.

Importable from every test directory (tests/ is on the path through its conftest)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: How often a condition is looked at again.
EVERY_S = 0.01


async def until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Await until `check()` (or the awaitable it returns) is truthy, and return that;
    fail naming `what` once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(EVERY_S)


def wait_until(check: Callable[[], T], timeout_s: float, what: str) -> T:
    """Block until `check()` is truthy, and return that; fail naming `what` once
    `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(EVERY_S)


def read_until(stream: IO[str], text: str) -> str:
    """The lines of a child's output stream up to and including the first holding
    `text` (bounded by the child's end: it fails, with what was read, if none does)."""
    seen = []
    while text not in (line := stream.readline()):
        assert line, f"{text!r} never came; read:\n{''.join(seen)}"
        seen.append(line)
    return "".join(seen) + line
