"""Progress of long work, for people watching: a line on stderr, or a callback of yours.

`app.map(..., progress=True)` shows

    map 'score': 12,800/20,000 items (64%), 3,412/s, about 2 s left

rewritten in place on a terminal (at most five times a second), or as a new line at
every tenth of the work when stderr is a file or a pipe (logs, CI). `progress=` may
also be any `callable(done, total)`, called in the app's event loop as items finish.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[int, int], None]

_TERMINAL_EVERY_S = 0.2


class ProgressLine:
    """A `ProgressCallback` that writes `label: done/total items ...` to a stream."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.in_place = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown_at = float("-inf")
        self._shown_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        finished = done >= total
        if self.in_place:
            if not finished and now - self._shown_at < _TERMINAL_EVERY_S:
                return
        else:
            tenth = 10 if finished else (10 * done) // max(total, 1)
            if tenth == self._shown_tenth:
                return
            self._shown_tenth = tenth
        self._shown_at = now
        text = self.text(done, total, now - self.started)
        if self.in_place:
            self.stream.write("\r" + text + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def text(self, done: int, total: int, elapsed_s: float) -> str:
        percent = 100 * done // total if total else 100
        head = f"{self.label}: {done:,}/{total:,} items ({percent}%)"
        if done >= total:
            return f"{head}, done in {_duration(elapsed_s)}"
        if done == 0 or elapsed_s <= 0:
            return head
        rate = done / elapsed_s
        return f"{head}, {rate:,.0f}/s, about {_duration((total - done) / rate)} left"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
