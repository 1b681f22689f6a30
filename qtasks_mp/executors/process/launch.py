"""Starting worker processes, and killing the ones a program forgot to close at exit."""

from __future__ import annotations

import atexit
import multiprocessing.spawn
import socket
import threading
import weakref
from typing import Any

from . import worker


def start_processes(
    ctx: Any, socks: list[socket.socket], args: tuple[Any, ...], name: str
) -> list[Any]:
    """Start one worker process per socket (blocks: run it in a thread)."""
    procs = [ctx.Process(target=worker.main, args=(sock, *args), name=name) for sock in socks]
    _install_main_filter()
    _launching.active = True
    try:
        for proc in procs:
            proc.start()
    finally:
        _launching.active = False
    return procs


# Under spawn and forkserver, multiprocessing re-runs the parent's main module in every
# child (as `__mp_main__`) so that functions of `__main__` can be found by name. Our
# workers do not need it (functions of `__main__` travel by value, with cloudpickle),
# and a script that starts its app at module level, with no `if __name__ ==
# "__main__":` guard, would start it again in every worker. So, for the processes we
# launch (and only those: a thread-local flag), the main module is left out of the
# preparation data. The wrapper is installed once and passes everything else through.
_launching = threading.local()


def _install_main_filter() -> None:
    original = multiprocessing.spawn.get_preparation_data
    if getattr(original, "_qtasks_mp", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if getattr(_launching, "active", False):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data._qtasks_mp = True  # type: ignore[attr-defined]
    multiprocessing.spawn.get_preparation_data = get_preparation_data


# A program that exits without closing its pools must not hang in multiprocessing's
# own atexit hook, which joins every child: kill our workers first. (atexit runs
# handlers last-registered first; multiprocessing registered its hook on import.)
_open: weakref.WeakSet[Any] = weakref.WeakSet()  # the rosters of running pools


def opened(roster: Any) -> None:
    _open.add(roster)


def closed(roster: Any) -> None:
    _open.discard(roster)


@atexit.register
def _kill_open_pools() -> None:
    for roster in list(_open):
        roster.kill_all()
