"""QTasks' two processes on one machine, with no line added: a worker runs
`app.run_forever()` (or `qtasks-mp -A module:app run`), a client imports the same
module and adds tasks.

```text
 worker: python app.py                      client: python add_tasks.py (from app import app)
   app.run_forever()                          app.add_task(...) / my_task.add_task(...)
     │ default store? use the app's home        │ app not running, default store:
     │ (a SQLite file in the temp dir, named    │   a worker holds the home's lock?
     │ by the file defining the app + its name) │     "home"   -> use the same SQLite file
     │ hold <home>.worker (shared flock),       │     "memory" -> AppNotRunning: say what to add
     │ note the store kind in it                │   none -> as before (the sync app runs the
     ▼                                          ▼   task itself; the async one queues it)
           SQLite store (WAL): tasks, results, change notices between the processes
```

The check happens once per app, before its store opens, so the single-process path
(an app that runs where its tasks are added) does no extra work. The app is known by
the file that created it: `python app.py` and `import app` find the same home.
Without a file (a REPL, `python -c`) there is no home. Where `fcntl` is missing
(Windows) there is no home either: give both sides `store="sqlite:///tasks.db"`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: what a worker notes in its lock file: the kind of store it runs tasks from
HOME, SHARED, PRIVATE = "home", "shared", "private"


def defining_file() -> str | None:
    """The file of the first caller outside qtasks_mp (where `QueueTasks()` was written)."""
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("qtasks_mp"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    file = frame.f_globals.get("__file__")
    return os.path.realpath(file) if isinstance(file, str) and os.path.isfile(file) else None


class Home:
    """The place an app's worker and clients meet: `db`, and `lock` held by workers."""

    def __init__(self, app_name: str, defined_in: str) -> None:
        key = hashlib.sha256(f"{defined_in}\0{app_name}".encode()).hexdigest()[:16]
        base = Path(tempfile.gettempdir()) / f"qtasks_mp-{os.getuid()}"
        self.db = base / f"{Path(defined_in).stem}-{key}.db"
        self.lock = self.db.with_suffix(".worker")
        self._fd: int | None = None

    @classmethod
    def of(cls, app_name: str, defined_in: str | None) -> Home | None:
        if defined_in is None or fcntl is None:
            return None
        return cls(app_name, defined_in)

    def hold(self, note: str) -> None:
        """A worker: hold the lock (shared: several workers may run) for this process's life."""
        assert fcntl is not None
        if self._fd is not None:
            return
        self.db.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def worker(self) -> str | None:
        """A client: the note of a live worker (`HOME`, `SHARED`, `PRIVATE`), or None."""
        assert fcntl is not None
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a worker is alive
                return os.pread(fd, 64, 0).decode() or HOME
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


__all__ = ["HOME", "PRIVATE", "SHARED", "Home", "defining_file"]
