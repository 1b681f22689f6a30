"""Helpers for the contract and Dask tests: process accounting, files."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psutil

# Per-program helpers that outlive any one pool, by design: not leaks.
_PERMANENT = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def descendants() -> set[int]:
    """Our descendant processes, less the per-program multiprocessing helpers."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any(m in " ".join(p.cmdline()) for m in _PERMANENT):
                out.add(p.pid)
    return out


def leaked(before: set[int], timeout_s: float = 5.0) -> list[int]:
    """Descendants that appeared since `before` and do not exit within `timeout_s`."""
    procs = []
    for pid in descendants() - before:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return [p.pid for p in alive if _status(p) != psutil.STATUS_ZOMBIE]


def _status(p: psutil.Process) -> str:
    try:
        return str(p.status())
    except psutil.NoSuchProcess:
        return psutil.STATUS_ZOMBIE


def pid_gone(pid: int, timeout_s: float = 5.0) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    _, alive = psutil.wait_procs([proc], timeout=timeout_s)
    return not alive or _status(alive[0]) == psutil.STATUS_ZOMBIE


async def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    """The file's text once a worker (anywhere on this machine) has written it."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text()  # noqa: ASYNC240 (a few bytes)
            if text:
                return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} was not written within {timeout_s}s")
        await asyncio.sleep(0.01)
