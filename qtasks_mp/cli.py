"""`qtasks-mp`: run an app's dispatcher and timers; look into a SQLite task store.

    qtasks-mp run main:app --store tasks.db      run until Ctrl-C / SIGTERM
    qtasks-mp stats --store tasks.db             queue depth, per-task counts and timings
    qtasks-mp tasks --store tasks.db --status error
    qtasks-mp purge --store tasks.db --older-than 7d
    qtasks-mp cancel UUID --store tasks.db       cancel a queued or running task
    qtasks-mp requeue --status error --store tasks.db   run failed tasks again
    qtasks-mp web --store tasks.db               the live dashboard (extra `web`)
    qtasks-mp top --store tasks.db               the live terminal view (extra `web`)

Every mistake a user can make here (a module that is not there, no app in it, a store
that cannot be opened) ends in one line on stderr and exit status 2 (1 for a store
that fails), never a traceback. An exception raised by the user's own module while it
is imported is shown with its traceback: that one is a bug in their code.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import os
import re
import statistics
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from types import ModuleType
from typing import Any, NoReturn
from uuid import UUID

from .app import AppCore
from .errors import ArgumentValueError, QTasksError
from .lifecycle import defer_run_forever, stop_signals
from .qtasks_cli import inspect_lines, translate
from .stats import format_duration, format_progress
from .stores import store_from
from .stores._sqlite_schema import decode_progress
from .stores.base import Store
from .task import TaskStatus
from .web import live_command

log = logging.getLogger("qtasks_mp.cli")

STORE_ENV = "QTASKS_MP_STORE"


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


# ------------------------------------------------------------------ parser

_EPILOG = """\
examples:
  qtasks-mp run main:app                      # main.py in this directory, object `app`
  qtasks-mp run bot/main.py:app --store tasks.db --log-level debug
  qtasks-mp stats --store tasks.db
  qtasks-mp tasks --store tasks.db --status error --limit 5
  qtasks-mp purge --store tasks.db --older-than 7d
  qtasks-mp cancel 0f9c...e1 --store tasks.db
  qtasks-mp requeue --status error --task sync_with_crm --store tasks.db

--store may also come from the QTASKS_MP_STORE environment variable.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtasks-mp",
        description="Run qtasks_mp apps and inspect their durable SQLite task stores.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run an app's dispatcher (and its timers) until Ctrl-C",
        description=(
            "Import the module, find the app (qtasks_mp.QueueTasks or "
            "qtasks_mp.asyncio.QueueTasks) and every AsyncTimer of it in the module, then "
            "run them until SIGINT or SIGTERM, stopping cleanly. The module is imported "
            'under its own name, so code under `if __name__ == "__main__":` does not run; '
            "a bare `app.run_forever()` / `timer.run_forever()` at import returns at once "
            "(the CLI runs them itself after the import)."
        ),
        epilog=(
            "examples:\n  qtasks-mp run main:app\n"
            "  qtasks-mp run path/to/bot.py:app --store tasks.db --thread-workers 8\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "target",
        metavar="MODULE:APP",
        help="a module or a .py file, and the app's name in it (default name: app)",
    )
    _store_option(run, required=False, what="use this store instead of the app's own")
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning or error (default: the app's config.logs_default_level)",
    )
    run.add_argument(
        "--max-tasks-process",
        type=_positive_int,
        metavar="N",
        help="coroutine tasks run at once on the event loop (config.max_tasks_process)",
    )
    run.add_argument(
        "--thread-workers",
        type=_positive_int,
        metavar="N",
        help="threads of the default thread executor (config.thread_workers)",
    )
    run.set_defaults(func=_cmd_run)

    inspect = sub.add_parser(
        "inspect",
        help="an app's registered tasks and their options (QTasks: stats inspect tasks)",
    )
    inspect.add_argument("target", metavar="MODULE:APP")
    inspect.add_argument("what", nargs="*", help="tasks [NAME...] (default) or app")
    inspect.set_defaults(func=_cmd_inspect)

    stats = sub.add_parser(
        "stats",
        help="queue depth by status, and per-task counts and timings",
        description="Print how many tasks the store holds by status, and one row per task "
        "name: queued, running, finished ok/failed, retries, run time and queue wait.",
    )
    _store_option(stats, required=True, what="the SQLite task store to read")
    stats.set_defaults(func=_cmd_stats)

    tasks = sub.add_parser(
        "tasks",
        help="list tasks (e.g. failures with their tracebacks)",
        description="List tasks, newest first; failed ones with their tracebacks.",
    )
    _store_option(tasks, required=True, what="the SQLite task store to read")
    tasks.add_argument(
        "--status",
        choices=[s.value for s in TaskStatus],
        help="only tasks in this status (e.g. error)",
    )
    tasks.add_argument("--task", metavar="NAME", help="only tasks of this name")
    tasks.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="at most N (default 20)"
    )
    tasks.set_defaults(func=_cmd_tasks)

    purge = sub.add_parser(
        "purge",
        help="delete finished tasks (or others) from the store",
        description="Delete tasks from the store. By default the finished ones (success, "
        "error, cancel); `--status new` also deletes tasks waiting to run. Tasks running "
        "now are never deleted.",
    )
    _store_option(purge, required=True, what="the SQLite task store to purge")
    purge.add_argument(
        "--status",
        action="append",
        choices=["success", "error", "cancel", "new"],
        help="delete tasks in this status; repeat for several (default: finished ones)",
    )
    purge.add_argument(
        "--older-than",
        type=_duration,
        default=0.0,
        metavar="AGE",
        help="only tasks last updated longer ago than AGE: 3600, 90s, 15m, 12h, 7d",
    )
    purge.set_defaults(func=_cmd_purge)

    cancel = sub.add_parser(
        "cancel",
        help="cancel queued or running tasks",
        description="Cancel tasks by id. A queued task never starts; a running one is "
        "stopped by the process that runs it (it sees the request within a second; a "
        "process worker is killed and replaced). Exit status 1 if an id is unknown.",
    )
    cancel.add_argument("uuids", nargs="+", metavar="UUID", help="the ids of the tasks")
    _store_option(cancel, required=True, what="the task store the tasks are in")
    cancel.set_defaults(func=_cmd_cancel)

    requeue = sub.add_parser(
        "requeue",
        help="run tasks that ended error (or cancel) again, under the same ids",
        description="Queue tasks that ended error or cancel again: by id, or every task "
        "in --status (and of --task). Their attempts start over; the run that ended, "
        "with its traceback, is kept in the task's history (see `qtasks-mp tasks`).",
    )
    requeue.add_argument("uuids", nargs="*", metavar="UUID", help="the ids of the tasks")
    requeue.add_argument("--status", choices=["error", "cancel"], help="every task in this status")
    requeue.add_argument("--task", metavar="NAME", help="with --status: only tasks of this name")
    _store_option(requeue, required=True, what="the task store the tasks are in")
    requeue.set_defaults(func=_cmd_requeue)
    return parser


def _store_option(parser: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    default = os.environ.get(STORE_ENV)
    parser.add_argument(
        "--store",
        default=default,
        required=required and default is None,
        metavar="STORE",
        help=f"{what}: a file path, sqlite:///path.db or postgresql://user@host/db "
        f"(env {STORE_ENV})",
    )
    parser.add_argument(
        "--busy-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="SQLite only: how long to wait for another program's lock on the file (default 10)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90, 90s, 15m, 12h, 7d)")
    return float(match[1]) * _UNITS[match[2]]


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qtasks-mp` and `python -m qtasks_mp`; returns the exit status."""
    argv = translate(sys.argv[1:] if argv is None else argv)  # QTasks' `-A module:app run`
    live = live_command(argv)
    if live is not None:
        return live  # `web` and `top` (extra `web`) parse their own options
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except UsageError as e:
        print(f"qtasks-mp: error: {e}", file=sys.stderr)
        return 2
    except QTasksError as e:  # StoreError, StoreLocked, ConfigError...
        print(f"qtasks-mp: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `qtasks-mp tasks ... | head`: the reader has enough
        # Python would report the pipe again when it flushes stdout at exit: point
        # stdout at /dev/null first (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


# ------------------------------------------------------------------ run


def _cmd_run(args: argparse.Namespace) -> int:
    # While the module is imported, a `run_forever()` it calls returns at once (and logs
    # that it did): the app and its timers run below, once the overrides are applied.
    token = defer_run_forever.set(True)
    try:
        module, obj = load_target(args.target)
    finally:
        defer_run_forever.reset(token)
    core: AppCore = obj.core if hasattr(obj, "core") else obj
    config = core.config
    if args.log_level is not None:
        config.logs_default_level = _log_level(args.log_level)
    if args.max_tasks_process is not None:
        config.max_tasks_process = args.max_tasks_process
    if args.thread_workers is not None:
        config.thread_workers = args.thread_workers
    if args.store is not None:
        if getattr(core, "_store_open", False):
            raise UsageError(
                f"{args.target} already opened its store while being imported; "
                "drop --store or set store= in the module"
            )
        core.store = _sqlite_store(args.store, args.busy_timeout)
    else:
        core.become_worker()  # the default store: the app's home, as run_forever() does
    timers = _timers_of(module, core)
    if not core.store.shared:
        log.warning(
            "app %r uses the memory store: tasks still queued when it stops are lost; "
            "run with --store tasks.db for a durable one",
            core.name,
        )
    asyncio.run(_serve(core, timers))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    token = defer_run_forever.set(True)
    try:
        _, obj = load_target(args.target)
    finally:
        defer_run_forever.reset(token)
    print(inspect_lines(obj, args.what))
    return 0


async def _serve(core: AppCore, timers: list[Any]) -> None:
    with stop_signals(core.hurry_stop) as stop:
        async with core:
            for timer in timers:
                await timer.start()
            if timers:
                log.info("%d timer(s) running", len(timers))
            try:
                log.info("running; press Ctrl-C to stop")
                await stop.wait()
            finally:
                for timer in timers:
                    await timer.stop()


def load_target(target: str) -> tuple[ModuleType, Any]:
    """Import `module:attr` or `path/file.py:attr` and return (module, app object)."""
    where, _, attr = target.rpartition(":") if ":" in target else (target, "", "app")
    attr = attr or "app"
    if not where:
        raise UsageError(f"{target!r}: give MODULE:APP, e.g. main:app or path/to/main.py:app")
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _import_file(where)
    else:
        module = _import_module(where)
    if not hasattr(module, attr):
        apps = [k for k, v in vars(module).items() if _is_app(v)]
        hint = f"; apps in it: {', '.join(apps)}" if apps else "; it defines no QueueTasks app"
        raise UsageError(f"module {module.__name__!r} has no attribute {attr!r}{hint}")
    obj = getattr(module, attr)
    if not _is_app(obj):
        raise UsageError(
            f"{module.__name__}:{attr} is a {type(obj).__name__}, not a QueueTasks app "
            "(qtasks_mp.QueueTasks or qtasks_mp.asyncio.QueueTasks)"
        )
    return module, obj


def _is_app(obj: Any) -> bool:
    return isinstance(obj, AppCore) or isinstance(getattr(obj, "core", None), AppCore)


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path!r}")
    name = os.path.splitext(os.path.basename(path))[0]
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # its siblings import, and process workers find it
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling by reference needs it there
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        _import_failed(path, e)
    return module


def _import_module(name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(
                f"no module named {name!r} (looked in {os.getcwd()} and sys.path); "
                "run from the directory that holds it, or give a path: path/to/main.py:app"
            ) from None
        _import_failed(name, e)
    except BaseException as e:
        _import_failed(name, e)


def _import_failed(what: str, e: BaseException) -> NoReturn:
    if isinstance(e, KeyboardInterrupt):
        raise e
    if isinstance(e, SystemExit):
        raise UsageError(f"importing {what!r} called sys.exit({e.code!r})") from None
    traceback.print_exception(type(e), e, e.__traceback__)  # their bug: show where
    raise UsageError(f"importing {what!r} failed: {type(e).__name__}: {e}") from None


def _timers_of(module: ModuleType, core: AppCore) -> list[Any]:
    timers_module = sys.modules.get("qtasks_mp.timers")
    if timers_module is None:
        return []
    found = [v for v in vars(module).values() if isinstance(v, timers_module.AsyncTimer)]
    return [t for t in found if t.app is core]


def _log_level(text: str) -> int:
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {text!r}: use debug, info, warning or error")
    return level


# ------------------------------------------------------------------ store commands


def _sqlite_store(value: str, busy_timeout_s: float, *, must_exist: bool = False) -> Store:
    try:
        store = store_from(value)
    except TypeError as e:
        raise UsageError(str(e)) from None
    if not store.shared:
        raise UsageError(
            f"--store {value!r} is neither a SQLite file nor a PostgreSQL URL: the memory "
            "store lives inside the running app only"
        )
    from .stores.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        store.busy_timeout_s = busy_timeout_s
        if must_exist and not os.path.exists(store.path):
            raise UsageError(f"no task store at {store.path!r}")
    return store


def _shown(value: str) -> str:
    """A --store value fit to print: a PostgreSQL URL without its password."""
    if "://" in value and not value.startswith("sqlite:"):
        from .stores.postgres import redact

        return redact(value)
    return value


def _with_store(args: argparse.Namespace, job: Any) -> Any:
    from .config import QueueConfig

    store = _sqlite_store(args.store, args.busy_timeout, must_exist=True)

    async def run() -> Any:
        config = QueueConfig()
        config.result_retention_count = 2**62  # reading must not trim anything
        config.result_retention_s = float(2**62)
        await store.open(config, lambda: None)
        try:
            return await job(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _cmd_stats(args: argparse.Namespace) -> int:
    async def job(store: Any) -> tuple[dict[str, int], list[Any]]:
        return await store.counts(), await store.task_rows()

    counts, rows = _with_store(args, job)
    print(f"store: {_shown(args.store)}  ({sum(counts.values())} tasks)\n")
    print(render_table([("status", "tasks"), *((s, str(n)) for s, n in counts.items())]))
    print()
    if rows:
        print(render_table(task_summary(rows)))
    else:
        print("no tasks yet")
    return 0


def task_summary(rows: list[tuple[str, str, int, float, float, float, float]]) -> list[Any]:
    """Rows of the per-task table (header first) from `SQLiteStore.task_rows()`."""
    by_name: dict[str, list[tuple[str, str, int, float, float, float, float]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    head = ("task", "queued", "running", "ok", "failed", "cancel", "retries")
    out: list[tuple[str, ...]] = [(*head, "run p50", "run p95", "wait p50")]
    for name in sorted(by_name):
        group = by_name[name]
        status = [r[1] for r in group]
        runs = sorted(r[6] - r[5] for r in group if r[6] > 0 and r[5] > 0)
        waits = [max(0.0, r[5] - (r[4] or r[3])) for r in group if r[5] > 0]
        out.append(
            (
                name,
                str(status.count("new")),
                str(status.count("process")),
                str(status.count("success")),
                str(status.count("error")),
                str(status.count("cancel")),
                str(sum(r[2] for r in group)),
                format_duration(_pct(runs, 0.50)),
                format_duration(_pct(runs, 0.95)),
                format_duration(statistics.median(waits) if waits else None),
            )
        )
    return out


def _pct(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_tasks(args: argparse.Namespace) -> int:
    async def job(store: Any) -> list[Any]:
        rows: list[Any] = await store.list_tasks(args.status, args.task, args.limit)
        return rows

    rows = _with_store(args, job)
    if not rows:
        what = f"with status {args.status!r}" if args.status else ""
        print(f"no tasks {what}".rstrip())
        return 0
    for uuid, name, status, retry, updated, tb, progress, history in rows:
        when = datetime.fromtimestamp(updated).strftime("%Y-%m-%d %H:%M:%S")
        shown = ""
        if progress is not None:
            shown = f"  progress {format_progress(decode_progress(progress))}"
        print(f"{UUID(bytes=uuid)}  {name}  {status}  retries={retry}{shown}  updated {when}")
        if tb:
            print("    " + tb.rstrip().replace("\n", "\n    "))
        for n, run in enumerate(json.loads(history) if history else (), 1):
            ended = datetime.fromtimestamp(run["finished_at"]).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"    earlier run {n}: {run['status']} after {run['attempts']} attempt(s), {ended}"
            )
            if run["traceback"]:
                print("        " + run["traceback"].rstrip().replace("\n", "\n        "))
        print()
    return 0


def _with_app(args: argparse.Namespace, job: Any) -> Any:
    """Run `job(app)` on a stopped app over the store (it runs no task: it asks the
    store, and waits on it for other processes)."""
    from .config import QueueConfig

    config = QueueConfig()
    config.result_retention_count = 2**62  # this process must not trim anything
    config.result_retention_s = float(2**62)
    store = _sqlite_store(args.store, args.busy_timeout, must_exist=True)
    app = AppCore("qtasks-mp", store=store, config=config)

    async def run() -> Any:
        await store.open(config, lambda: None)  # the app opens it again, with its hooks
        try:
            return await job(app)
        finally:
            await store.close()

    return asyncio.run(run())


def _cmd_cancel(args: argparse.Namespace) -> int:
    uuids = [_uuid(u) for u in args.uuids]

    async def job(app: AppCore) -> list[tuple[UUID, bool, str]]:
        out = []
        for uuid in uuids:
            cancelled = await app.cancel(uuid)
            task = await app.get(uuid)
            out.append((uuid, cancelled, "" if task is None else str(task.status)))
        return out

    for uuid, cancelled, status in _with_app(args, job):
        print(f"{uuid}  " + ("cancelled" if cancelled else f"not cancelled: it had ended {status}"))
    return 0


def _cmd_requeue(args: argparse.Namespace) -> int:
    uuids = [_uuid(u) for u in args.uuids]
    if bool(uuids) == bool(args.status):
        raise UsageError("give task ids, or --status error|cancel (not both)")
    if args.task and not args.status:
        raise UsageError("--task selects among --status; with ids, give the ids only")

    async def job(app: AppCore) -> tuple[int, int]:
        todo = uuids
        if args.status:
            rows = await app.store.list_tasks(args.status, args.task, 2**62)  # type: ignore[attr-defined]
            todo = [UUID(bytes=row[0]) for row in rows]
        done = skipped = 0
        for uuid in todo:
            try:
                await app.requeue(uuid)
            except ArgumentValueError:
                if not args.status:
                    raise
                skipped += 1  # it changed meanwhile (requeued by someone else)
            else:
                done += 1
        return done, skipped

    done, skipped = _with_app(args, job)
    note = f" ({skipped} changed meanwhile, left alone)" if skipped else ""
    print(f"requeued {done} tasks in {_shown(args.store)}{note}")
    return 0


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a task id (a UUID, as `qtasks-mp tasks` prints)"
        ) from None


def _cmd_purge(args: argparse.Namespace) -> int:
    statuses = sorted(set(args.status or ["success", "error", "cancel"]))

    async def job(store: Any) -> int:
        count: int = await store.purge(statuses, args.older_than)
        return count

    count = _with_store(args, job)
    age = f" last updated over {args.older_than:g}s ago" if args.older_than else ""
    print(f"deleted {count} tasks ({', '.join(statuses)}){age} from {_shown(args.store)}")
    return 0
