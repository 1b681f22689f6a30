"""Task functions for the recipe tests; importable, so a subprocess can load them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

_calls = 0


def hoard(mib: int) -> int:
    """Allocate `mib` MiB and touch it."""
    block = bytearray(mib << 20)
    return len(block)


def calls_so_far() -> int:
    """Module state: counts calls in this process."""
    global _calls
    _calls += 1
    return _calls


def exit_with(code: int) -> None:
    os._exit(code)


def spawn_then_block(pids: str) -> None:
    """Start a grandchild, report both pids, then hang until killed."""
    child = subprocess.Popen(["sleep", "60"])
    Path(pids).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)


def spawn_and_return() -> int:
    """Leaky code: leaves a grandchild running and returns."""
    return subprocess.Popen(["sleep", "60"]).pid


def print_and_return(text: str) -> str:
    print("noise on stdout that must not break the result channel")
    return text
