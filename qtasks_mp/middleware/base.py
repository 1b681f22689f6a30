"""The middleware interface, and the chain built from it once per task at app start.

A middleware is an onion layer: `async def __call__(self, call, call_next)` runs code
before and after `await call_next(call)`, may change the result, or raise. It runs in
the dispatcher's loop, never in a worker, and is never pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from ..executors.base import Call
from ..task import TaskRecord

CallNext = Callable[[Call], Awaitable[Any]]


class Middleware(ABC):
    #: Extra `@app.task(...)` options this middleware reads from `call.spec.options`.
    #: `@app.task` rejects an option that no middleware of the app declares.
    options: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    async def __call__(self, call: Call, call_next: CallNext) -> Any: ...

    def on_add(self, record: TaskRecord) -> None:
        """Called as `add_task` builds a new task's record, in the adding program (a
        producer without a dispatcher too), for the app's middlewares that define it:
        write into `record.headers` (a dict of str, kept by every store) what the task's
        runs should see, such as the caller's trace context. Not called otherwise."""

    def check_options(self, task_name: str, options: Mapping[str, Any]) -> None:
        """Refuse, at `@app.task`, the options this middleware reads that it could not use.

        `options` holds every option the decorator got (built-in and declared ones), as
        given. Raise `TaskRegistrationError` naming the task, the value and the fix; the
        task is then not registered. The default accepts anything.
        """


def build_chain(middlewares: Sequence[Middleware], terminal: CallNext) -> CallNext:
    """Wrap `terminal` in the middlewares, first one outermost. Done once, not per call.

    Each layer is a closure calling the middleware's bound `__call__` with the next
    layer: one frame per layer, and half the cost of a `partial` with a keyword (which
    builds a dict each call). `layers(chain)` lists them.
    """
    handler = terminal
    for mw in reversed(middlewares):
        handler = _layer(mw, handler)
    return handler


def _layer(mw: Middleware, call_next: CallNext) -> CallNext:
    run = mw.__call__

    def layer(call: Call) -> Awaitable[Any]:
        return run(call, call_next)

    setattr(layer, _LAYER, (mw, call_next))  # for `layers`
    return layer


_LAYER = "_qtasks_mp_layer"


def layers(chain: CallNext) -> list[Middleware]:
    """The middlewares of a chain made by `build_chain`, outermost first."""
    out: list[Middleware] = []
    while (found := getattr(chain, _LAYER, None)) is not None:
        out.append(found[0])
        chain = found[1]
    return out
