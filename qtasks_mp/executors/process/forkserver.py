"""The fork server: a small process of one pool that starts its workers (runs in the child).

The parent starts it once per pool with `python -c` (see `launch.ForkServer`): a fresh
interpreter, the parent's `sys.path`, and nothing of the parent's `__main__`, so a
script with no `if __name__ == "__main__":` guard is never run again. It imports the
worker side (`worker.py`, `wire`, `context`) and the pool's `preload` modules once;
each worker is then a `fork()` of it: a few milliseconds, and the forking is safe
because this process has one thread only. With `spawn=True` it starts each worker
with `posix_spawn` of a fresh interpreter instead.

Over its socket to the parent (msgpack messages; the new worker's socket travels as
SCM_RIGHTS ancillary data with the request, in order):

    parent -> server   [SERVER_LAUNCH, log_levels, max_memory]  + the worker's socket
    server -> parent   [SERVER_LAUNCHED, pid]                   (one per request, in order)
                       [SERVER_EXITED, pid, exitcode]           (-signal if killed)

It reaps its children (they are the workers), so it alone learns their exit codes; it
exits when the parent's end of the socket closes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from ... import wire
from . import worker

SERVER_LAUNCH = 1
SERVER_LAUNCHED = 2
SERVER_EXITED = 3

_MAX_FDS = 64  # sockets received in one read at most

#: `python -c` code that starts a worker (spawn=True): the parent's sys.path first.
WORKER_BOOT = (
    "import json, sys; config = json.loads(sys.argv[1]); sys.path[:] = config['path']; "
    "from qtasks_mp.executors.process.worker import spawned; spawned(config)"
)


def serve(config: dict[str, Any]) -> None:
    """Entry point (see `launch.SERVER_BOOT`); `config` as `launch.ForkServer` makes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: only the parent decides
    ctl = socket.socket(fileno=config["ctl"])
    ctl.set_inheritable(False)
    alive, tracker = config["alive"], config["tracker"]
    wire.use_resource_tracker(tracker)
    for fd in (alive, tracker):  # for workers started with posix_spawn
        os.set_inheritable(fd, True)
    for name in config["preload"]:
        # Best effort: a worker imports them again and reports a failure as its own.
        with contextlib.suppress(BaseException):
            importlib.import_module(name)
    # SIGCHLD wakes the select() below through this pipe.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    unpacker = wire.unpacker()
    fds: deque[int] = deque()  # sockets received, one per launch request, in order
    spawn = bool(config["spawn"])

    def launch(message: list[Any]) -> int:
        _, levels, max_memory = message
        fd = fds.popleft()
        if spawn:
            os.set_inheritable(fd, True)
            boot = {"path": sys.path, "sock": fd, "alive": alive, "tracker": tracker}
            boot.update(preload=config["preload"], levels=levels, max_memory=max_memory)
            argv = [sys.executable, "-c", WORKER_BOOT, json.dumps(boot)]
            try:
                return os.posix_spawn(sys.executable, argv, os.environ)
            finally:
                os.close(fd)
        pid = os.fork()
        if pid:
            os.close(fd)
            return pid
        # The worker. It must hold nothing of the server's: the socket to the parent,
        # the wake-up pipe, and the sockets of workers yet to start.
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            selector.close()
            ctl.close()
            for other in (wake_r, wake_w, *fds):
                os.close(other)
            sock = socket.socket(fileno=fd)
            worker.main(sock, alive, config["preload"], levels, max_memory)
        finally:
            os._exit(1)

    with contextlib.suppress(OSError):  # the parent went away: nothing left to do
        _loop(ctl, selector, unpacker, fds, wake_r, launch)
    os._exit(0)


def _loop(
    ctl: socket.socket,
    selector: selectors.BaseSelector,
    unpacker: Any,
    fds: deque[int],
    wake_r: int,
    launch: Callable[[list[Any]], int],
) -> None:
    while True:
        for key, _ in selector.select():
            if key.fileobj is ctl:
                data, received, _, _ = socket.recv_fds(ctl, 1 << 16, _MAX_FDS)
                if not data:  # the parent closed the pool, or died
                    return
                fds.extend(received)
                unpacker.feed(data)
                for message in unpacker:
                    ctl.sendall(wire.packb([SERVER_LAUNCHED, launch(message)]))
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(ctl)


def _reap(ctl: socket.socket) -> None:
    """Tell the parent of every child that exited (SIGCHLD signals may merge: loop)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ctl.sendall(wire.packb([SERVER_EXITED, pid, os.waitstatus_to_exitcode(status)]))
