"""`Timing`: per-task-name counts, queue wait and run time, for `app.stats()`.

Run times are kept in a bounded reservoir per task name (the most recent 2,048
attempts), so percentiles stay cheap and memory stays flat however long the app runs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from ..errors import Retry
from ..executors.base import Call
from .base import CallNext, Middleware

_RESERVOIR = 2048


@dataclass(slots=True)
class TaskTimes:
    count: int = 0  # finished tasks (success or final error)
    ok: int = 0
    failed: int = 0
    retried: int = 0  # attempts that ended in a retry
    run_s: deque[float] = field(default_factory=lambda: deque(maxlen=_RESERVOIR))
    wait_s: deque[float] = field(default_factory=lambda: deque(maxlen=_RESERVOIR))

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "ok": self.ok,
            "failed": self.failed,
            "retried": self.retried,
            "run_p50_s": percentile(self.run_s, 0.50),
            "run_p95_s": percentile(self.run_s, 0.95),
            "wait_p50_s": percentile(self.wait_s, 0.50),
            "wait_p95_s": percentile(self.wait_s, 0.95),
        }


def percentile(values: deque[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timing(Middleware):
    def __init__(self) -> None:
        self.tasks: dict[str, TaskTimes] = {}

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        times = self.tasks.get(call.spec.name)
        if times is None:
            times = self.tasks[call.spec.name] = TaskTimes()
        record = call.record
        wait = record.started_at - (record.eta or record.created_at)
        times.wait_s.append(wait if wait > 0.0 else 0.0)
        start = perf_counter()
        try:
            result = await call_next(call)
        except Retry:
            times.retried += 1
            raise
        except BaseException:
            times.count += 1
            times.failed += 1
            raise
        finally:
            times.run_s.append(perf_counter() - start)
        times.count += 1
        times.ok += 1
        return result

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: t.summary() for name, t in sorted(self.tasks.items())}
