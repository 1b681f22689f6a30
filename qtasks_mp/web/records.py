"""What the dashboard's pages show, whatever the store: rows, filters, summaries."""

from __future__ import annotations

import pprint
import reprlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from ..task import TaskStatus

STATUSES = tuple(s.value for s in TaskStatus)
FINISHED = ("success", "error", "cancel")
SERIES_BUCKET_S = 10
SERIES_SPAN_S = 600  # the throughput chart: the last 10 minutes

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = 6


def short_repr(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [_short.repr(a) for a in args] + [f"{k}={_short.repr(v)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def long_repr(value: Any, limit: int = 65_536) -> str:
    text = pprint.pformat(value, width=100, compact=True)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more)"


@dataclass
class Filter:
    status: str | None = None
    name: str | None = None
    text: str | None = None


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_before: int | None  # cursor for older rows; None: nothing older
    scanned_to: int | None = None  # set when the budget ran out before the page filled


@dataclass
class Overview:
    counts: dict[str, int] | None  # by status; None while a big store is being counted
    by_task: list[dict[str, Any]] | None  # task, lane, and a count per status
    lanes: list[dict[str, Any]]  # lane, queued, running, slots
    timing: list[dict[str, Any]]  # task, run/wait p50/p95 (seconds or None)
    series: list[tuple[float, int, int]] | None  # (bucket start, done, failed)
    done_per_s: float
    failed_per_s: float
    timing_note: str
    cost_s: float = 0.0
    counted_cost_s: float = 0.0  # the last background count of the whole store
    count_error: str | None = None
    as_of: float = field(default_factory=time.time)


#: The columns of a listed row, in the order `row_dict` takes them (the same in both
#: SQL stores); a task's page adds `result`.
ROW = (
    "seq, uuid, task_name, lane, status, priority, retry, created_at, updated_at, "
    "started_at, finished_at, eta, args, traceback, progress"
)


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A listed task from a row of `ROW` (`uuid` as 16 bytes, `args` and `progress` as
    stored)."""
    from ..stats import format_progress
    from ..stores._sqlite_codec import decode_call
    from ..stores._sqlite_schema import decode_progress

    (seq, uuid, name, lane, status, priority, retry, created, updated, started, finished,
     eta, args_blob, tb, progress) = row  # fmt: skip
    try:
        args, kwargs = decode_call(args_blob)
        shown = short_repr(args, kwargs)
    except Exception as e:  # a pickled class this program cannot import
        shown = f"<cannot decode here: {type(e).__name__}>"
    return {
        "seq": seq,
        "uuid": str(UUID(bytes=uuid)),
        "task_name": name,
        "lane": lane,
        "status": status,
        "priority": priority,
        "retry": retry,
        "created_at": created,
        "updated_at": updated,
        "started_at": started,
        "finished_at": finished,
        "eta": eta,
        "args": shown,
        "error": (tb or "").strip().splitlines()[-1] if tb else "",
        "progress": format_progress(decode_progress(progress)) if progress is not None else "",
    }


def detail_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A task's page from a row of `ROW` + `result`."""
    from ..stores._sqlite_codec import decode_call, decode_value

    detail = row_dict(row[:-1])
    try:
        args, kwargs = decode_call(row[12])
        detail["args_full"] = long_repr(args)
        detail["kwargs_full"] = long_repr(kwargs)
    except Exception as e:
        detail["args_full"] = detail["kwargs_full"] = f"<cannot decode here: {e!r}>"
    try:
        detail["result"] = long_repr(decode_value(row[15]))
    except Exception as e:
        detail["result"] = f"<cannot decode here: {e!r}>"
    detail["traceback"] = row[13]
    return with_timings(detail)


def percentile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def with_timings(d: dict[str, Any]) -> dict[str, Any]:
    started, finished = d["started_at"], d["finished_at"]
    d["attempts"] = d["retry"] + (1 if started else 0)
    d["wait_s"] = max(0.0, started - (d["eta"] or d["created_at"])) if started else None
    d["run_s"] = finished - started if started and finished else None
    d.setdefault("progress", "")  # done/total (percent) note, as format_progress writes it
    return d


def summarise_rows(
    rows: Iterable[tuple[str, str, float, float, float, float]],
) -> list[dict[str, Any]]:
    """p50/p95 run and wait per task from (name, status, created, eta, started, finished)."""
    runs: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    for name, _status, created, eta, started, finished in rows:
        if started > 0:
            waits.setdefault(name, []).append(max(0.0, started - (eta or created)))
            if finished > 0:
                runs.setdefault(name, []).append(finished - started)
    out = []
    for name in sorted(set(runs) | set(waits)):
        r, w = sorted(runs.get(name, [])), sorted(waits.get(name, []))
        out.append(
            {
                "task": name,
                "run_p50_s": percentile(r, 0.5),
                "run_p95_s": percentile(r, 0.95),
                "wait_p50_s": percentile(w, 0.5),
                "wait_p95_s": percentile(w, 0.95),
            }
        )
    return out


def group_counts(
    rows: Iterable[tuple[str, str, str, int]],
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts = dict.fromkeys(STATUSES, 0)
    by_task: dict[tuple[str, str], dict[str, Any]] = {}
    for name, lane, status, n in rows:
        counts[status] = counts.get(status, 0) + n
        entry = by_task.setdefault(
            (name, lane), {"task": name, "lane": lane, **dict.fromkeys(STATUSES, 0)}
        )
        entry[status] = entry.get(status, 0) + n
    return counts, [by_task[k] for k in sorted(by_task)]
