"""Running QTasks' own examples, ported (import prefix changed), as QTasks
runs them: a worker process (`python app.py` -> `app.run_forever()`, or
`qtasks-mp -A module:app run`) and client processes that import the app's module.

`ports/` holds the ported files; they are programs, not test modules (see
conftest.py). Each group is copied to a temporary directory, so its app has a
home of its own (`qtasks_mp/home.py` keys it by the defining file), removed after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from qtasks_mp.home import Home

PORTS = Path(__file__).parent / "ports"
READY = "press Ctrl-C to stop"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


class Proc:
    """A long-running program whose merged output is read as it comes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # end of output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """Wait until `text` appears `count` times in the output (woken per line)."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: (
                    "".join(self._lines).count(text) >= count
                    or (self._lines[-1:] == [""] and self.proc.poll() is not None)
                ),
                timeout,
            )
            out = "".join(self._lines)
        assert ok and out.count(text) >= count, f"{text!r} x{count} not seen:\n{out}"
        return out

    def stop_reader(self) -> None:
        """For a process that has ended: read the rest of its output, close the pipe."""
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> str:
        """SIGINT, as Ctrl-C; it must end cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        assert code == 0, f"exit status {code}:\n{self.output}"
        return self.output


def copy_port(group: str, into: Path) -> Path:
    where = into / group
    shutil.copytree(PORTS / group, where)
    return where


def remove_home(app_file: Path, app_name: str = "QueueTasks") -> None:
    home = Home(app_name, os.path.realpath(app_file))
    for path in (home.db, home.lock, *home.db.parent.glob(home.db.name + "-*")):
        path.unlink(missing_ok=True)


def run(argv: list[str], cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def python(script: str, cwd: Path, timeout: float = 60.0) -> str:
    """Run a client program to its end; its stdout (it must exit 0)."""
    out = run([sys.executable, script], cwd, timeout)
    assert out.returncode == 0, f"{script}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def worker(where: Path, script: str, via_cli: str | None = None) -> Proc:
    """Start QTasks' worker: `python script` (its `app.run_forever()`), or the CLI."""
    argv = [sys.executable, script]
    if via_cli is not None:
        argv = [sys.executable, "-m", "qtasks_mp", "-A", via_cli, "run"]
    proc = Proc(argv, where)
    proc.wait_for(READY)
    return proc
