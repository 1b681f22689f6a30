"""A throw-away PostgreSQL cluster for tests and benchmarks: `initdb` in a temporary
directory, `pg_ctl` to start, restart and stop it, a Unix socket in that directory and
127.0.0.1 on a free port. Nothing outside the directory is touched.

The server refuses to run as root, and CI runs as root: then every server command runs
as the `postgres` user (created by Debian's `postgresql` package) through `runuser`.
Missing binaries are an error naming the fix (`.ci/postgres.sh`), never a skip.

    cluster = Cluster.start()
    url = cluster.url()            # postgresql://qtasks@127.0.0.1:PORT/qtasks
    cluster.restart("immediate")   # every connection dropped, crash recovery
    cluster.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

USER = "qtasks"  # a plain role that owns its database: what a user is given by a DBA
DATABASE = "qtasks"

_FIX = "run `.ci/postgres.sh` (installs Debian's postgresql package) and try again"


class ClusterError(RuntimeError):
    pass


def bindir() -> Path:
    """Where initdb, pg_ctl and postgres live (Debian: /usr/lib/postgresql/<ver>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    for name in ("initdb", "pg_ctl"):
        path = shutil.which(name)
        if path:
            return Path(os.path.realpath(path)).parent
    raise ClusterError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {_FIX}")


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except (ValueError, IndexError):
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """One running server. `start()` returns it ready; `stop()` removes everything."""

    def __init__(self, root: Path, port: int, settings: dict[str, str]) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.settings = settings
        self.bin = bindir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(
                    f"running as root and there is no `postgres` user to run the server: {_FIX}"
                ) from None
            self._as = ["runuser", "-u", "postgres", "--"]

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, *, fsync: bool = False, **settings: str) -> Cluster:
        """A new cluster with `USER` owning `DATABASE`. `fsync=False` (tests): a killed
        server keeps every commit, a crashed machine would not; the benchmarks keep it on."""
        root = Path(tempfile.mkdtemp(prefix="qtasks-pg-"))
        cluster = cls(root, _free_port(), {"fsync": "on" if fsync else "off", **settings})
        try:
            if cluster._as:
                shutil.chown(root, "postgres", "postgres")
            cluster._run(
                [str(cluster.bin / "initdb"), "-D", str(cluster.data), "-U", "postgres",
                 "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
            )  # fmt: skip
            cluster._pg_ctl("start", "-w", "-t", "60")
            atexit.register(cluster.stop)
            cluster.sql(
                f"CREATE ROLE {USER} LOGIN",
                f"CREATE DATABASE {DATABASE} OWNER {USER}",
            )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _options(self) -> str:
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            "shared_buffers": "64MB",
            **self.settings,
        }
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
             "-o", self._options(), *args]
        )  # fmt: skip

    def restart(self, mode: str = "fast") -> None:
        """Stop (`fast`: clients disconnected; `immediate`: no shutdown checkpoint, crash
        recovery at start) and start again on the same port and socket."""
        self._pg_ctl("stop", "-w", "-m", mode)
        self._pg_ctl("start", "-w", "-t", "60")

    def pause(self) -> None:
        """Stop the server (clients cut off) until `resume()`."""
        self._pg_ctl("stop", "-w", "-m", "fast")

    def resume(self) -> None:
        self._pg_ctl("start", "-w", "-t", "60")

    def stop(self) -> None:
        if self.root.exists():
            if (self.data / "postmaster.pid").exists():
                with contextlib.suppress(ClusterError):
                    self._pg_ctl("stop", "-w", "-m", "immediate")
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, cmd: Sequence[str], timeout_s: float = 90) -> str:
        done = subprocess.run(
            [*self._as, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=self.root,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ClusterError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}\n{tail}")
        return done.stdout

    # ------------------------------------------------------------ using it

    def url(self, user: str = USER, database: str = DATABASE, *, tcp: bool = False) -> str:
        """A connection URL: over the Unix socket by default, or 127.0.0.1."""
        if tcp:
            return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{user}@/{database}?host={self.root}&port={self.port}"

    def sql(self, *statements: str, database: str = "postgres", user: str = "postgres") -> str:
        """Run statements with psql (each in its own transaction); its output."""
        cmd = [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", str(self.root), "-p", str(self.port), "-U", user, "-d", database]  # fmt: skip
        for s in statements:
            cmd += ["-c", s]
        return self._run(cmd)

    def fresh_database(self, name: str) -> str:
        """A new empty database owned by `USER` (dropped first if it exists); its URL."""
        self.sql(
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name} OWNER {USER}"
        )
        return self.url(database=name)


def query(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of one statement, on a connection of our own (as another program would).

    Blocking; called from a running loop (an async test), it runs in a thread of its own.
    """
    import asyncio
    import concurrent.futures

    import asyncpg

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
