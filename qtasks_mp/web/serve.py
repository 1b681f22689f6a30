"""Serving the dashboard with uvicorn: in the app's loop, or as `qtasks-mp web`.

It binds 127.0.0.1 unless told otherwise, and refuses any other address without a
token (see `server.py` for how the token and the CSRF token are checked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import uvicorn

from .server import Dashboard
from .source import AppSource, Source, StoreSource, is_postgres

__all__ = [
    "DashboardServer",
    "check_store",
    "main_web",
    "open_store_source",
    "serve_dashboard",
    "store_path",
]

TOKEN_ENV = "QTASKS_MP_WEB_TOKEN"
STORE_ENV = "QTASKS_MP_STORE"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the app (or `main_web`) owns those."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DashboardServer:
    """A uvicorn server for one `Source`, in the running loop. `port=0`: a free port.

    Raises ValueError when `host` is not a loopback address and no `token` is given,
    OSError when the port is taken (at `start()`).
    """

    def __init__(
        self,
        source: Source,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
    ) -> None:
        if token is not None and not token:
            raise ValueError("token must not be empty")
        if not is_loopback(host) and token is None:
            raise ValueError(
                f"the dashboard binds {host!r}, which other machines can reach: give it a "
                f"token (token=..., or --token / {TOKEN_ENV}) or bind 127.0.0.1"
            )
        self.source = source
        self.host = host
        self.port = port
        self.dashboard = Dashboard(source, token=token)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> int:
        """Bind and listen (connections queue from here on), serve in a task; the port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.dashboard,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        self._sampler = asyncio.create_task(self._sample())
        return self.port

    async def _sample(self) -> None:
        """Once a second, whether or not a page is open: the throughput chart's samples."""
        stopping = self.dashboard.stopping
        while not stopping.is_set():
            self.source.tick()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)

    async def stop(self) -> None:
        """End the event streams, stop serving, close the store reader."""
        self.dashboard.stopping.set()
        if self._sampler is not None:
            await self._sampler
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self.source.aclose()

    async def __aenter__(self) -> DashboardServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve_dashboard(
    app: Any,
    port: int = 8000,
    host: str = "127.0.0.1",
    token: str | None = None,
    *,
    timers: Iterable[Any] = (),
) -> None:
    """Serve the dashboard of `app` (sync or async facade) in the running loop until cancelled.

    `timers`: `AsyncTimer`s whose next fire times the pages show.
    """
    server = DashboardServer(AppSource(app, timers), host=host, port=port, token=token)
    await server.start()
    try:
        await asyncio.Event().wait()  # until cancelled
    finally:
        await server.stop()


# ------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtasks-mp web",
        description=(
            "Serve the live dashboard over a task store that other processes run (a SQLite "
            "file or a PostgreSQL database): "
            "counts, timings, tasks with filters, /metrics for Prometheus, purging."
        ),
    )
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        help=(
            "the task store: a SQLite file (a path or sqlite:///path) or a PostgreSQL URL "
            f"(postgresql://user@host/db); default ${STORE_ENV}"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"required to view or act (default ${TOKEN_ENV}); needed to bind a non-local address",
    )
    return parser


def store_path(value: str) -> str:
    """A SQLite store's file from a path or a sqlite:/// URL."""
    if value.startswith("sqlite:///"):
        value = value[len("sqlite:///") :]
    return os.path.expanduser(value)


def check_store(path: str) -> str | None:
    """What is wrong with `path` as a task store to read, or None."""
    if not os.path.exists(path):
        return f"no task store at {path!r}"
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'"
            ).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"{path!r} cannot be read as a task store: {e}"
    return None if found else f"{path!r} is not a qtasks_mp task store (no tasks table)"


async def open_store_source(value: str) -> StoreSource:
    """The dashboard's source for `--store`: a SQLite file (a path, sqlite:///path) or a
    PostgreSQL URL. Raises ValueError saying what is wrong (the password hidden)."""
    if is_postgres(value):
        from ..stores.postgres import redact

        source = StoreSource(value)
        try:
            await source.check()
        except Exception as e:
            await source.aclose()
            raise ValueError(
                f"cannot read the task store {redact(value)}: {type(e).__name__}: {e}"
            ) from e
        return source
    path = store_path(value)
    problem = check_store(path)
    if problem is not None:
        raise ValueError(problem)
    return StoreSource(path)


def shown_store(value: str) -> str:
    """`--store` as printed: a URL's password hidden."""
    if is_postgres(value):
        from ..stores.postgres import redact

        return redact(value)
    return store_path(value)


def main_web(argv: Sequence[str] | None = None) -> int:
    """`qtasks-mp web`: 0 after Ctrl-C / SIGTERM, 2 on a usage error (one line on stderr)."""
    args = _parser().parse_args(argv)
    if not args.store:
        print(f"qtasks-mp web: error: give --store (or set {STORE_ENV})", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not args.token:
        print(
            f"qtasks-mp web: error: --host {args.host} can be reached from other machines: "
            f"give --token (or set {TOKEN_ENV}), or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2

    async def run() -> int:
        from ..lifecycle import wait_for_stop_signal

        try:
            source = await open_store_source(args.store)
        except ValueError as e:
            print(f"qtasks-mp web: error: {e}", file=sys.stderr)
            return 2
        server = DashboardServer(source, host=args.host, port=args.port, token=args.token)
        try:
            await server.start()
        except BaseException:
            await source.aclose()
            raise
        print(f"qtasks-mp web: serving {server.url} (store {shown_store(args.store)})", flush=True)
        try:
            await wait_for_stop_signal()
        finally:
            await server.stop()
        return 0

    try:
        return asyncio.run(run())
    except OSError as e:
        print(
            f"qtasks-mp web: error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr
        )
        return 2
