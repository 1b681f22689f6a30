"""Starting worker processes: the parent's side of a pool's fork server (`forkserver.py`).

No `multiprocessing` here: its spawn and forkserver start methods run the parent's
main module again in every child (so that functions of `__main__` can be found by
name), which starts a second app in each worker of a script with no `if __name__ ==
"__main__":` guard, and it has no parameter to leave that out. Our workers do not need
it: functions of `__main__` travel by value, with cloudpickle.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable

from ... import wire
from ...errors import QTasksError
from .forkserver import SERVER_EXITED, SERVER_LAUNCH, SERVER_LAUNCHED

#: `python -c` code that starts a fork server: the parent's sys.path first, so that
#: qtasks_mp and the user's modules are found where the parent found them.
SERVER_BOOT = (
    "import json, sys; config = json.loads(sys.argv[1]); sys.path[:] = config['path']; "
    "from qtasks_mp.executors.process.forkserver import serve; serve(config)"
)


class ForkServer:
    """One pool's fork server, seen from the parent: `launch` a worker, hear of exits.

    `on_exit(pid, exitcode)` is called, in the loop, for every worker that exited;
    `on_lost()` if the server itself went away while the pool ran (its workers' exits
    will not be reported: they must be killed and counted as crashed).
    """

    def __init__(
        self, on_exit: Callable[[int, int | None], None], on_lost: Callable[[], None]
    ) -> None:
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.alive_w = -1  # workers exit when this, the pipe's only write end, closes
        self.launches: deque[asyncio.Future[int]] = deque()
        self.unpacker = wire.unpacker()
        self._starting: asyncio.Future[None] | None = None
        self._kept: socket.socket | None = None  # see `forget`

    async def ensure(self, preload: list[str], spawn: bool) -> None:
        """Start it unless it runs; callers that come while it starts wait for that start
        (workers replaced together after the server died must not start one each)."""
        if self.running:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._start(preload, spawn))
        await asyncio.shield(self._starting)

    @property
    def running(self) -> bool:
        return self.sock is not None

    async def _start(self, preload: list[str], spawn: bool) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        alive_r, alive_w = os.pipe()
        tracker = wire.tracker_fd()
        config = {
            "path": [p for p in sys.path if isinstance(p, str)],
            "ctl": child.fileno(),
            "alive": alive_r,
            "tracker": tracker,
            "preload": preload,
            "spawn": spawn,
        }
        command = [sys.executable, "-c", SERVER_BOOT, json.dumps(config)]
        fds = (child.fileno(), alive_r, tracker)

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL)

        try:
            self.proc = await loop.run_in_executor(None, popen)  # fork + exec: off the loop
        except BaseException:
            parent.close()
            os.close(alive_w)
            raise
        finally:
            child.close()
            os.close(alive_r)
        parent.setblocking(False)
        self.sock, self.alive_w = parent, alive_w
        self.unpacker = wire.unpacker()
        loop.add_reader(parent.fileno(), self._readable)

    async def launch(
        self, sock: socket.socket, levels: dict[str, int], max_memory: int | None
    ) -> int:
        """Start a worker on `sock` (its end of a socket pair); its pid."""
        if self.sock is None:
            raise QTasksError("the fork server is not running")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        message = wire.packb([SERVER_LAUNCH, levels, max_memory])
        socket.send_fds(self.sock, [message], [sock.fileno()])  # a few bytes: never blocks
        self.launches.append(fut)
        return await fut

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        self.unpacker.feed(data)
        for message in self.unpacker:
            if message[0] == SERVER_LAUNCHED:
                fut = self.launches.popleft()
                if not fut.done():  # cancelled: the worker finds its socket closed, exits
                    fut.set_result(message[1])
            elif message[0] == SERVER_EXITED:
                self.on_exit(message[1], message[2])

    def _gone(self) -> None:
        """The server closed its socket: it died (or was killed)."""
        proc, self.proc = self.proc, None
        code = None if proc is None else proc.poll()
        if proc is not None and code is None:  # reap it (in a thread: it may still be dying)
            asyncio.get_running_loop().run_in_executor(None, proc.wait)
        self._disconnect()
        error = QTasksError(f"the process pool's fork server exited (exit code {code})")
        while self.launches:
            fut = self.launches.popleft()
            if not fut.done():
                fut.set_exception(error)
        self.on_lost()

    def _disconnect(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        if self.alive_w >= 0:
            os.close(self.alive_w)
            self.alive_w = -1

    def forget(self) -> list[int]:
        """In a forked child: the server is the parent's. Drop it without a word to it or
        to the loop; return our copies of its descriptors, for the caller to blank."""
        if self.alive_w >= 0:
            os.close(self.alive_w)  # a plain descriptor, in no event loop
        fds = [] if self.sock is None else [self.sock.fileno()]
        # The socket object lives on (`_kept`), closing the /dev/null put in its place.
        self._kept, self.sock, self.alive_w, self.proc = self.sock, None, -1, None
        self.launches.clear()
        return fds

    async def close(self) -> None:
        """Stop the server (it exits when its socket closes) and wait for it."""
        self._disconnect()
        proc, self.proc = self.proc, None
        if proc is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, proc.wait, 5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                await loop.run_in_executor(None, proc.wait)
