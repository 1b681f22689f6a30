"""`DaskExecutor`: runs tasks on a Dask distributed cluster (`pip install "qtasks-mp[dask]"`).

Data flow. The left side runs in the dispatcher's event loop, with Dask's asynchronous
client on the same loop, so nothing here blocks it.

    run(call) ──> scatter large arguments ──> client.submit(_run_in_worker, target, args,
       │          (bytes, arrays >= 1 MiB)      kwargs, key="<task>-<uuid>-<attempt>")
       │                                              │
       │                                              v
       │                                   Dask scheduler ──> a Dask worker thread:
       │                                                      resolves `target` (an import
       │                                                      by name, or a cloudpickled
       │                                                      function) and calls it; a
       │                                                      generator runs to a list
       v                                              │
    await the Dask future <── result, or the task's exception with its traceback (tblib)
       │                      KilledWorker (worker died)        ──> WorkerCrashed
       │                      our timeout: future cancelled     ──> TaskTimeout
       └─> generator items, one by one, through `call.handle_item` here, after the end

What Dask does for us and what stays ours:

- Functions ship with Dask's cloudpickle; a function `@app.task` decorated in an
  importable module is sent by name (the worker imports it), like the process executor.
- Arguments at least `scatter_min_bytes` large (bytes, bytearray, memoryview, anything
  with an int `nbytes`, such as NumPy arrays), when passed directly as an argument, go
  to the workers with `client.scatter` instead of inside the task graph.
- Retries are ours (the `Retries` middleware): we never pass Dask's `retries=`, so
  `retry=` and `retry_on_exc=` behave as on every other executor.
- A worker that dies while running a task: the scheduler reruns the task elsewhere
  until it has seen `distributed.scheduler.allowed-failures` deaths (Dask's default: 3),
  then fails it with `KilledWorker`, which we raise as `WorkerCrashed`. The LocalCluster
  this executor starts itself sets that to 0, so one death fails the call and `retry=`
  decides, as with the process executor. Set it on your scheduler for the same rule.

Surprises, on purpose:

- `timeout` cancels the Dask future and fails the task with `TaskTimeout`, but a Dask
  task that is already running cannot be killed: it runs on in its worker thread until
  it returns, and its result is dropped. The clock starts when the call is submitted,
  so it includes the time the task waited on the scheduler for a free thread.
- Generator items are collected in the worker and reach `generate_handler` (in the
  app's event loop) all at once when the generator ends: they are not streamed.
- `echo=True` is not supported: the task context talks to this app, which a worker on
  another machine cannot reach. A task with `echo=True` fails with a message saying so.

Concurrency: `slots` is the cluster's total worker threads times `slots_per_thread`
(default 2), read from the client's scheduler info (Dask refreshes it every couple of
seconds), so a cluster that grows gets more calls. The extra calls per thread wait on
the scheduler, ready to start the moment a thread frees up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

try:
    import dask
    from distributed import Client, LocalCluster
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "DaskExecutor needs Dask distributed: pip install 'qtasks-mp[dask]' "
        f"(or 'dask[distributed]'); importing it failed: {e}"
    ) from e

from .. import wire
from ..errors import (
    AppNotRunning,
    QTasksError,
    TaskCancelError,
    TaskRegistrationError,
    TaskTimeout,
    WorkerCrashed,
)
from ..registries import Kind, TaskSpec
from .base import Call, Executor

__all__ = ["DaskExecutor"]

SCATTER_MIN_BYTES = 1 << 20  # an argument at least this large is scattered, not embedded

# Target: what crosses to the worker for a function. (module, qualname, unwrap) when
# the worker can import it by name; the function itself (Dask cloudpickles it) otherwise.
_Target = tuple[str, str, bool] | Callable[..., Any]


class DaskExecutor(Executor):
    """Runs plain functions and generators on a Dask cluster.

    Give one of:

    - `address`: a running scheduler, such as `"tcp://10.0.0.5:8786"`;
    - `client`: a `distributed.Client` you made (an asynchronous one on the app's loop
      is used as is; a synchronous one lends its scheduler address to a client of ours);
      it stays open when the app stops;
    - neither: a `LocalCluster` of `n_workers` processes (default: CPU count) with
      `threads_per_worker` threads (default 1) starts in `start()` and is closed in
      `aclose()`; `cluster_kwargs` go to `LocalCluster` (e.g. `dashboard_address=":0"`).
      Its worker processes are started with `spawn`, so a script that runs it needs
      the `if __name__ == "__main__":` guard, as any Dask LocalCluster does.

    Raises `ValueError` for a contradictory choice, and `ImportError` (on import) when
    Dask is not installed.
    """

    name = "dask"
    kinds = frozenset({Kind.FUNCTION, Kind.GENERATOR})
    supports_context = False  # echo=True: the context cannot reach the app from a worker

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Client | None = None,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        slots_per_thread: int = 2,
        scatter_min_bytes: int = SCATTER_MIN_BYTES,
        cluster_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if address is not None and client is not None:
            raise ValueError("DaskExecutor: give a scheduler address or a client, not both")
        if (address is not None or client is not None) and (
            n_workers is not None or cluster_kwargs
        ):
            raise ValueError(
                "DaskExecutor: n_workers and cluster_kwargs size a LocalCluster that this "
                "executor starts; with an address or a client the cluster is not ours to size"
            )
        for label, value in [
            ("n_workers", n_workers),
            ("threads_per_worker", threads_per_worker),
            ("slots_per_thread", slots_per_thread),
        ]:
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a whole number >= 1, got {value!r}")
        self.address = address
        self.n_workers = n_workers or os.cpu_count() or 1
        self.threads_per_worker = threads_per_worker
        self.slots_per_thread = slots_per_thread
        self.scatter_min_bytes = scatter_min_bytes
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self._given_client = client
        self.client: Client | None = None
        self.cluster: LocalCluster | None = None
        self._own_client = False
        self._targets: dict[TaskSpec, _Target] = {}
        self._cancels: set[asyncio.Task[Any]] = set()
        self._futures: dict[Call, Any] = {}  # the Dask future of each call running
        self._cancelled: set[Call] = set()  # calls app.cancel() cancelled
        self.calls_done = 0
        self.crashes = 0
        self.timeouts = 0
        self.scattered = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def threads(self) -> int:
        """Worker threads in the cluster, as the client last heard from the scheduler."""
        if self.client is None:
            return 0
        return int(self.client.scheduler_info().get("total_threads", 0))

    @property
    def slots(self) -> int:
        return max(1, self.threads) * self.slots_per_thread

    async def start(self) -> None:
        if self.client is not None:
            return
        given = self._given_client
        if given is not None and given.asynchronous:
            self.client = given
            return
        address = self.address
        if given is not None:
            if given.scheduler is None:
                raise ValueError("DaskExecutor: the client given is not connected to a scheduler")
            address = given.scheduler.address
        try:
            if address is None:
                kwargs: dict[str, Any] = {
                    "n_workers": self.n_workers,
                    "threads_per_worker": self.threads_per_worker,
                    "processes": True,
                    **self.cluster_kwargs,
                }
                # A worker's death fails its call (WorkerCrashed); retry= decides the rest.
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self.cluster = await LocalCluster(asynchronous=True, **kwargs)  # type: ignore[no-untyped-call]
                address = self.cluster.scheduler_address
            self.client = await Client(address, asynchronous=True)  # type: ignore[no-untyped-call]
            self._own_client = True
        except BaseException:
            await self.aclose(cancel_pending=True)
            raise

    async def aclose(self, cancel_pending: bool = False) -> None:
        """Close our client and our LocalCluster (never a client you passed in).

        With `cancel_pending`, futures still running are cancelled first (a Dask task
        already running in a worker thread runs on; its worker is stopped only when
        the cluster is ours)."""
        if self._cancels:
            await asyncio.wait(list(self._cancels))
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        if client is not None and self._own_client:
            closing = client.close()  # type: ignore[no-untyped-call]
            if closing is not None:  # an asynchronous client returns an awaitable
                await closing
        self._own_client = False
        if cluster is not None:
            stopping = cluster.close()
            if stopping is not None:
                await stopping

    # ------------------------------------------------------------------ calls

    async def run(self, call: Call) -> Any:
        client = self.client
        if client is None:
            raise AppNotRunning(
                f"task {call.task_name!r}: the Dask executor {self.name!r} is not started"
            )
        if call.context is not None:
            raise TaskRegistrationError(
                f"task {call.task_name!r} has echo=True, which the Dask executor "
                f"{self.name!r} does not support: the task context talks to this app, and a "
                "Dask worker cannot reach it. Drop echo=True (queue follow-up tasks from the "
                "code that awaits this one), or run the task on executor='process' or 'thread'."
            )
        spec = call.spec
        target = self._targets.get(spec)
        if target is None:
            target = self._targets[spec] = _target(spec.fn)
        args, kwargs = call.args, call.kwargs
        if self.scatter_min_bytes >= 0:
            args, kwargs = await self._scatter(client, args, kwargs)
        generator = spec.kind is Kind.GENERATOR
        key = f"{call.task_name}-{call.record.uuid.hex}-{call.attempt}"
        # One Dask future per attempt; never Dask's own `retries=` (retries are ours).
        future = client.submit(_run_in_worker, target, args, kwargs, generator, key=key, pure=False)
        timeout = spec.timeout
        self._futures[call] = future
        try:
            if timeout is None:
                result = await future
            else:
                result = await asyncio.wait_for(future.result(), timeout)
        except asyncio.TimeoutError:
            self.timeouts += 1
            self._cancel(future)
            assert timeout is not None
            raise TaskTimeout(
                call.task_name,
                timeout,
                "its Dask future was cancelled, but a running Dask task cannot be killed: it "
                "runs on in its worker thread until it returns (its result is dropped); use "
                "executor='process' for a hard limit",
            ) from None
        except asyncio.CancelledError:  # the app is stopping: let Dask drop it too
            self._cancel(future)
            raise
        except KilledWorker as e:
            self.crashes += 1
            raise _crashed(call, e) from e
        except FutureCancelledError as e:
            if call in self._cancelled:  # app.cancel(): the dispatcher ends it `cancel`
                raise TaskCancelError(
                    "cancelled: by app.cancel(); its Dask future was cancelled (a Dask task "
                    "already running goes on in its worker thread; its result is dropped)"
                ) from e
            # Not ours (our own cancellations end above): lost scheduler, or cancelled by
            # someone else sharing the cluster.
            raise QTasksError(
                f"task {call.task_name!r}: its Dask future was cancelled ({e.reason}); "
                "check the scheduler's log (a lost connection, or another client cancelled it)"
            ) from e
        finally:
            del self._futures[call]
            self._cancelled.discard(call)
        self.calls_done += 1
        if generator:
            return [await call.handle_item(item) for item in result]
        return result

    async def _scatter(
        self, client: Client, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Replace large top-level arguments by Dask futures of scattered data."""
        limit = self.scatter_min_bytes
        big_args = [i for i, a in enumerate(args) if _nbytes(a) >= limit]
        big_kwargs = [k for k, v in kwargs.items() if _nbytes(v) >= limit]
        if not big_args and not big_kwargs:
            return args, kwargs
        values = [args[i] for i in big_args] + [kwargs[k] for k in big_kwargs]
        futures = await client.scatter(values, hash=False)  # type: ignore[no-untyped-call]
        self.scattered += len(values)
        new_args = list(args)
        for i, fut in zip(big_args, futures, strict=False):
            new_args[i] = fut
        new_kwargs = dict(kwargs)
        for k, fut in zip(big_kwargs, futures[len(big_args) :], strict=True):
            new_kwargs[k] = fut
        return tuple(new_args), new_kwargs

    def cancel(self, call: Call) -> bool:
        """Cancel the call's Dask future: a task not started yet never runs; a running
        one goes on in its Dask worker's thread (Dask cannot stop it) and its result is
        dropped. `run` ends as soon as the scheduler confirms the cancellation."""
        future = self._futures.get(call)
        if future is None:
            return False
        self._cancelled.add(call)
        self._cancel(future, "app.cancel()")
        return True

    def _cancel(self, future: Any, reason: str = "qtasks_mp gave up on it") -> None:
        """Cancel a Dask future without waiting here (we may be cancelled ourselves)."""
        client = self.client
        if client is None or future.done():
            return
        cancelling = client.cancel([future], reason=reason)  # type: ignore[no-untyped-call]
        task = asyncio.ensure_future(cancelling)
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    # ------------------------------------------------------------------ info

    def stats(self) -> dict[str, Any]:
        client = self.client
        info: dict[str, Any] = client.scheduler_info() if client is not None else {}
        dashboard: str | None = None
        if client is not None:
            with contextlib.suppress(Exception):  # no dashboard service on the scheduler
                dashboard = client.dashboard_link
        return {
            **super().stats(),
            "scheduler": info.get("address"),
            "dashboard": dashboard,
            "workers": int(info.get("n_workers", 0)),
            "threads": int(info.get("total_threads", 0)),
            "calls_done": self.calls_done,
            "crashes": self.crashes,
            "timeouts": self.timeouts,
            "scattered": self.scattered,
        }


def _crashed(call: Call, e: KilledWorker) -> WorkerCrashed:
    """`WorkerCrashed` for a call whose Dask worker died (its message replaces the stock
    "exited with code None": Dask does not tell the client how a worker died)."""
    error = WorkerCrashed(call.task_name, None)
    first = str(e).split(". ")[0].rstrip(".")
    error.args = (
        f"the Dask worker running task {call.task_name!r} died ({type(e).__name__}: "
        f"{first}). Dask does not report the exit code or signal: see the worker's log",
    )
    return error


def _nbytes(value: Any) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, type):
        return -1
    n = getattr(value, "nbytes", None)
    return n if isinstance(n, int) else -1


def _target(fn: Callable[..., Any]) -> _Target:
    """What to send for `fn`: its import name if a worker can import it, else itself.

    By name matters for `@app.task` in a module: the module attribute is then the
    registered wrapper, and cloudpickle would otherwise send the function by value,
    with the globals it uses (the app among them).
    """
    ref = wire.function_ref(fn)
    return fn if ref is None else ref


_resolved: dict[tuple[str, str, bool], Callable[..., Any]] = {}  # in each worker process


def _run_in_worker(
    target: _Target, args: tuple[Any, ...], kwargs: dict[str, Any], generator: bool
) -> Any:
    """Runs in a Dask worker thread: find the function, call it, collect a generator."""
    if isinstance(target, tuple):
        fn = _resolved.get(target)
        if fn is None:
            module, qualname, unwrap = target
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            fn = _resolved[target] = obj.__wrapped__ if unwrap else obj
    else:
        fn = target
    if generator:
        return list(fn(*args, **kwargs))
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):
        result.close()
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} returned a coroutine on a Dask worker; the "
            "Dask executor runs plain functions: make it a plain `def`, or run it inline"
        )
    return result
