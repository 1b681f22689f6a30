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
