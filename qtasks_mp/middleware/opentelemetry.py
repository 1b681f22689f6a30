"""`OpenTelemetry`: one span per attempt of a task (extra `otel`).

```python
app = QueueTasks(middlewares=[OpenTelemetry()])  # the global tracer provider
```

Each attempt is a span named after the task (kind CONSUMER) with the attributes
`qtasks_mp.task.uuid`, `qtasks_mp.task.name`, `qtasks_mp.task.attempt`,
`qtasks_mp.task.lane`, `qtasks_mp.task.priority` and, at its end,
`qtasks_mp.task.status`: `success`, `error` (the exception is recorded on the span and
its status set to ERROR) or `cancel`. It sits inside `Retries`, as every middleware of
yours does, so an attempt that will be retried ends `error` too; the next attempt is
a new span with the next `attempt` number.

The span's parent is the span that was current where `add_task` was called: `on_add`
writes its W3C trace context (`traceparent`, `tracestate`) into the task's
`record.headers`, which every store keeps, so a task added by a web request in one
process and run by a worker in another (a SQLite or PostgreSQL store) joins the
request's trace, and so do all its attempts. Put the middleware in `middlewares=` on
the adding side too (the producer's app): `on_add` runs there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..executors.base import Call
from ..task import TaskRecord
from .base import CallNext, Middleware

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as e:  # pragma: no cover - users without the extra
    raise ImportError(
        "the OpenTelemetry middleware needs its extra: pip install 'qtasks-mp[otel]'"
    ) from e

__all__ = ["OpenTelemetry"]


class OpenTelemetry(Middleware):
    """Spans for task attempts. `tracer_provider`: default, the global one."""

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("qtasks_mp", tracer_provider=tracer_provider)

    def on_add(self, record: TaskRecord) -> None:
        """The caller's trace context into the new task's headers (none: no span)."""
        headers: dict[str, str] = {}
        inject(headers)
        if headers:
            record.headers = {**(record.headers or {}), **headers}

    @staticmethod
    def _parent(call: Call) -> otel_context.Context:
        """The context recorded at `add_task`, and nothing else: the loop's current one
        may belong to whatever started the dispatcher's worker (a request's span), so a
        task added without a trace context starts a trace of its own."""
        return extract(call.record.headers or {}, context=otel_context.Context())

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        record = call.record
        attributes: dict[str, Any] = {
            "qtasks_mp.task.uuid": str(record.uuid),
            "qtasks_mp.task.name": call.task_name,
            "qtasks_mp.task.attempt": call.attempt,
            "qtasks_mp.task.lane": record.lane,
            "qtasks_mp.task.priority": record.priority,
        }
        with self.tracer.start_as_current_span(
            call.task_name,
            context=self._parent(call),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,  # recorded below, once, with the task's own status
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next(call)
            except asyncio.CancelledError:
                span.set_attribute("qtasks_mp.task.status", "cancel")
                raise
            except BaseException as e:
                span.set_attribute("qtasks_mp.task.status", "error")
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
                raise
            span.set_attribute("qtasks_mp.task.status", "success")
            return result
