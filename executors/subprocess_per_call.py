"""A fresh Python subprocess for every call, with a memory cap and a hard time limit.

When to use it: code you do not trust to behave (a user-supplied formula, a parser of
hostile files), code that leaks memory or file handles, a C extension that may crash,
anything that must not share state with the previous call. The price is a process
start per call (tens of milliseconds): for trusted CPU work use `executor="process"`,
whose workers are reused.

    app = QueueTasks(executors={"sandbox": SubprocessExecutor(memory_limit_bytes=256 << 20)})

    @app.task(executor="sandbox", timeout=10)
    def render_report(template: str, data: dict) -> str: ...

What it guarantees:

- Memory: before the function runs, the child caps its own address space with
  `resource.setrlimit(RLIMIT_AS)` (soft and hard, so the code cannot lift it). Past the
  cap, allocations fail and the task fails with a `MemoryError` that says so. The cap
  counts virtual memory, including the interpreter and every imported module, so leave
  room: libraries that reserve big arenas (NumPy with OpenBLAS) need hundreds of MiB.
  Linux enforces it; macOS ignores RLIMIT_AS.
- Time: past `timeout` (the task's `timeout=`, else `default_timeout_s`), the child and
  everything it started (its own session, a process group) get SIGKILL; the task fails
  with `TaskTimeout`. The app stopping kills them the same way.
- Isolation: a crash (segfault, `os._exit`) fails that call with `WorkerCrashed`, whose
  message names the signal or exit code; nothing else is affected.
- Errors keep their type; the child's traceback travels back as the `__cause__`, so
  `Task.traceback` shows the line that raised.

How it works: the function goes to the child by name (its module is imported there,
with the parent's `sys.path`) or, for functions of `__main__`, by value with
cloudpickle; arguments and the result are cloudpickled through the child's stdin and
a private copy of its stdout (whatever the task prints goes to stderr). Generators run
to the end in the child; their items then pass through `generate_handler` here.
`echo=True` is not supported: the task context cannot reach the app from the child.

Uses only the public API: `Executor`, `Call`, `TaskTimeout`, `WorkerCrashed`,
`TaskRegistrationError`, `Kind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle

from qtasks_mp import Call, Executor, TaskRegistrationError, TaskTimeout, WorkerCrashed
from qtasks_mp.registries import Kind

# Runs in the child: `python -c _CHILD`. Kept to the standard library and cloudpickle.
_CHILD = r"""
import os, sys
out = os.fdopen(os.dup(1), "wb")  # our channel; the task's prints go to stderr
os.dup2(2, 1)
import importlib, pickle, resource, traceback
import cloudpickle

def dumps(msg):
    try:
        return cloudpickle.dumps(msg)
    except Exception as e:
        return cloudpickle.dumps(("err", None, "SerializationError",
            f"the result or the exception could not be pickled: {type(e).__name__}: {e}",
            traceback.format_exc(), False))

try:
    target, args, kwargs, generator, limit = pickle.loads(sys.stdin.buffer.read())
    if isinstance(target, tuple):
        module, qualname, unwrap = target
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        if unwrap:
            fn = fn.__wrapped__
    else:
        fn = target
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = fn(*args, **kwargs)
    msg = ("ok", list(result) if generator else result)
except BaseException as e:
    tb = traceback.format_exc()
    e.__traceback__ = None
    msg = ("err", e, type(e).__qualname__, str(e), tb, isinstance(e, MemoryError))
out.write(dumps(msg))
out.close()
"""


class _RemoteTraceback(Exception):
    """The child's traceback text, set as the `__cause__` of the error raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def _target(fn: Callable[..., Any]) -> tuple[str, str, bool] | Callable[..., Any]:
    """(module, qualname, unwrap) if the child can import `fn` by name, else `fn`.

    `unwrap`: the name holds what `@app.task` returned, whose `__wrapped__` is `fn`.
    """
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return fn
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is fn:
        return module, qualname, False
    if obj is not None and getattr(obj, "__wrapped__", None) is fn:
        return module, qualname, True
    return fn


class SubprocessExecutor(Executor):
    """Each call in a new `python` subprocess; at most `max_processes` at once.

    `memory_limit_bytes`: the child's address-space cap (None: no cap).
    `default_timeout_s`: the hard limit for tasks without `timeout=` (None: none).
    """

    name = "subprocess"
    kinds = frozenset({Kind.FUNCTION, Kind.GENERATOR})
    supports_context = False  # echo=True: the context cannot reach the app from the child

    def __init__(
        self,
        max_processes: int = 4,
        *,
        memory_limit_bytes: int | None = 512 << 20,
        default_timeout_s: float | None = None,
    ) -> None:
        super().__init__()
        self.max_processes = max_processes
        self.memory_limit_bytes = memory_limit_bytes
        self.default_timeout_s = default_timeout_s
        self._children: set[asyncio.subprocess.Process] = set()
        self.spawned = 0
        self.killed = 0

    @property
    def slots(self) -> int:
        return self.max_processes

    async def run(self, call: Call) -> Any:
        name = call.task_name
        if call.context is not None:
            raise TaskRegistrationError(
                f"task {name!r} has echo=True, which the subprocess executor {self.name!r} "
                "does not support (the task context cannot reach the app from a fresh "
                "process); drop echo=True, or run it on executor='process' or 'thread'"
            )
        generator = call.spec.kind is Kind.GENERATOR
        limit = self.memory_limit_bytes
        payload = cloudpickle.dumps(
            (_target(call.spec.fn), call.args, call.kwargs, generator, limit)
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: one killpg gets everything
        )
        self.spawned += 1
        self._children.add(proc)
        timeout = call.timeout if call.timeout is not None else self.default_timeout_s
        try:
            out, _ = await asyncio.wait_for(proc.communicate(payload), timeout)
        except asyncio.TimeoutError:
            await self._kill(proc)
            assert timeout is not None
            raise TaskTimeout(
                name, timeout, f"its subprocess (pid {proc.pid}) and its children were killed"
            ) from None
        except BaseException:  # cancelled (the app is stopping): leave nothing behind
            await asyncio.shield(self._kill(proc))
            raise
        finally:
            self._children.discard(proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the call left running in its group
        if proc.returncode != 0 or not out:
            crashed = WorkerCrashed(name, proc.returncode)
            if limit and proc.returncode is not None and proc.returncode < 0:
                crashed.args = (
                    f"{crashed} (its memory cap is {limit / 2**20:g} MiB; a failed allocation "
                    "in C code can end a process this way)",
                )
            raise crashed
        msg = cloudpickle.loads(out)
        if msg[0] == "ok":
            result = msg[1]
            if generator:
                return [await call.handle_item(item) for item in result]
            return result
        _, exc, type_name, text, tb, out_of_memory = msg
        remote = _RemoteTraceback(tb)
        if out_of_memory:
            assert limit is not None
            exc = MemoryError(
                f"task {name!r} ran out of memory in its subprocess: it is capped at "
                f"{limit / 2**20:g} MiB of address space; raise the SubprocessExecutor's "
                "memory_limit_bytes or make the task use less"
            )
        elif not isinstance(exc, Exception):  # SystemExit, an unpicklable exception, ...
            exc = RuntimeError(f"task {name!r} raised {type_name}: {text}")
        raise exc from remote

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            self.killed += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def aclose(self, cancel_pending: bool = False) -> None:
        for proc in list(self._children):
            await self._kill(proc)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "spawned": self.spawned, "killed": self.killed}
