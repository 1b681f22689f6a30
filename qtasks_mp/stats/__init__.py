"""Render `app.stats()["tasks"]` as a table a person reads at a glance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_duration(value: float | None) -> str:
    """Seconds as a person reads them: `512µs`, `3.4ms`, `1.25s`; `-` for None."""
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def format_progress(progress: Sequence[Any] | None) -> str:
    """A task's `(done, total, note)` as a person reads it: `30/120 (25%) page 3`,
    `7` without a total; `-` for None."""
    if progress is None:
        return "-"
    done, total, note = progress
    text = f"{done:g}" if isinstance(done, float) else str(done)
    if total is not None:
        text += f"/{total:g}" if isinstance(total, float) else f"/{total}"
        if total > 0:
            text += f" ({100 * done / total:.0f}%)"
    if note:
        text += f" {note}"
    return text


def format_table(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task name: count, ok, failed, retried, run time p50/p95, wait p50."""
    head = ("task", "count", "ok", "failed", "retried", "run p50", "run p95", "wait p50")
    rows = [head]
    for name, t in tasks.items():
        rows.append(
            (
                name,
                str(t["count"]),
                str(t["ok"]),
                str(t["failed"]),
                str(t["retried"]),
                format_duration(t["run_p50_s"]),
                format_duration(t["run_p95_s"]),
                format_duration(t["wait_p50_s"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


class InspectStats:
    """QTasks' inspection of an app's registered tasks (`stats.inspect().tasks()`)."""

    def __init__(self, app: Any) -> None:
        self._core = getattr(app, "core", app)

    def app(self, json: bool = False) -> Any:
        core = self._core
        info = {
            "name": core.name,
            "method": "sync" if core is not self._core_facade() else "async",
            "config": repr(core.config),
            "tasks": len(core.specs),
            "store": type(core.store).__name__,
            "executors": sorted(core.executors),
        }
        if json:
            return info
        return "\n".join(f"{k.capitalize()}: {v}" for k, v in info.items()) + "\n" + "-" * 50

    def _core_facade(self) -> Any:
        return self._core._registry.facade

    def task(self, task_name: str, json: bool = False) -> Any:
        return self.tasks(task_name, json=json)

    def tasks(self, *tasks: str, json: bool = False) -> Any:
        specs = self._core.specs
        chosen = [specs[t] for t in tasks if t in specs] if tasks else list(specs.values())
        chosen = [s for s in chosen if not s.name.startswith("qtasks_mp.")]  # chain links
        rows = [
            {
                "name": s.name,
                "priority": s.priority if s.priority is not None else 0,
                "description": s.description,
                "tags": list(s.tags),
                "asynchronous": s.kind.is_async,
                "echo": s.echo,
                "retry": s.retry,
                "retry_on_exc": [e.__name__ for e in s.retry_on_exc or ()],
                "max_time": s.timeout,
                "executor": s.executor,
                "extra": dict(s.options),
            }
            for s in chosen
        ]
        if json:
            return rows
        return "\n".join(
            "\n".join(f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in r.items())
            + "\n"
            + "-" * 50
            for r in rows
        )


class Stats:
    """QTasks' `AsyncStats` / `SyncStats`: `inspect()` (awaited on the async app)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def inspect(self) -> Any:
        inspect = InspectStats(self.app)
        if hasattr(self.app, "core"):  # the sync facade
            return inspect
        return _ready(inspect)


async def _ready(value: Any) -> Any:
    return value


AsyncStats = SyncStats = Stats
