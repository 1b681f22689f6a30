"""Reading the memory store of an app in this process, without stalling its loop."""

from __future__ import annotations

import time
from typing import Any

from ..stats import format_progress
from .records import Filter, Page, long_repr, short_repr, with_timings


def memory_counts(records: list[Any]) -> list[tuple[str, str, str, int]]:
    tally: dict[tuple[str, str, str], int] = {}
    for r in records:
        key = (r.task_name, r.lane, str(r.status))
        tally[key] = tally.get(key, 0) + 1
    return [(*k, n) for k, n in tally.items()]


def _record_dict(r: Any) -> dict[str, Any]:
    tb = r.traceback
    return {
        "seq": r.seq,
        "uuid": str(r.uuid),
        "task_name": r.task_name,
        "lane": r.lane,
        "status": str(r.status),
        "priority": r.priority,
        "retry": r.retry,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "eta": r.eta,
        "args": short_repr(r.args, r.kwargs),
        "error": tb.strip().splitlines()[-1] if tb else "",
        "progress": format_progress(r.progress) if r.progress is not None else "",
    }


def _matches(r: Any, filt: Filter) -> bool:
    if filt.status and str(r.status) != filt.status:
        return False
    if filt.name and r.task_name != filt.name:
        return False
    if filt.text:
        needle = filt.text.lower()
        hay = f"{r.task_name} {r.uuid} {r.traceback or ''} {r.args!r} {r.kwargs!r}".lower()
        return needle in hay
    return True


MEMORY_SCAN_BUDGET_S = 0.01  # the memory store is read in the loop: keep each page short


def memory_page(store: Any, filt: Filter, before: int | None, limit: int) -> Page:
    """Newest first by arrival (the records' insertion order; a retried task keeps its
    place). Runs in the loop without awaiting, so the dict cannot change under it; a
    sparse filter stops after `MEMORY_SCAN_BUDGET_S` with a cursor to go on from."""
    records = getattr(store, "_records", None)
    if not isinstance(records, dict):
        return Page([], None)
    out: list[Any] = []
    deadline = time.perf_counter() + MEMORY_SCAN_BUDGET_S
    last_seen: int | None = None
    for n, r in enumerate(reversed(records.values())):
        if before is not None and r.seq >= before:
            continue
        last_seen = r.seq
        if _matches(r, filt):
            out.append(r)
            if len(out) > limit:
                break
        if n % 512 == 511 and time.perf_counter() > deadline:
            rows = out[:limit]
            return Page([_record_dict(r) for r in rows], last_seen, last_seen)
    more = len(out) > limit
    out = out[:limit]
    return Page([_record_dict(r) for r in out], out[-1].seq if more else None)


def detail_from_record(r: Any) -> dict[str, Any]:
    d = _record_dict(r)
    d["args_full"] = long_repr(r.args)
    d["kwargs_full"] = long_repr(r.kwargs)
    d["result"] = long_repr(r.returning)
    d["traceback"] = r.traceback
    d["history"] = list(r.history)
    return with_timings(d)
