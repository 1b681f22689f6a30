"""OpenTelemetry: one span per attempt, with the task's id, attempt and status."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.base import Call
from qtasks_mp.middleware.opentelemetry import OpenTelemetry


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced_app(exporter: InMemorySpanExporter) -> QueueTasks:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = QueueTasks("otel", middlewares=[OpenTelemetry(tracer_provider=provider)])
    app.config.shutdown_timeout = 2.0
    return app


async def test_a_span_per_attempt_with_errors_recorded(exporter: InMemorySpanExporter) -> None:
    app = traced_app(exporter)
    calls = {"n": 0}

    @app.task(name="sync_with_crm", retry=1, retry_on_exc=[ConnectionError])
    async def sync_with_crm() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("CRM down")
        return "synced"

    @app.task(name="broken")
    def broken() -> None:
        raise ValueError("bad row")

    async with app:
        ok = await app.add_task("sync_with_crm", timeout=5)
        bad = await app.add_task("broken", timeout=5)
    assert ok is not None and bad is not None
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans] == ["sync_with_crm", "sync_with_crm", "broken"]
    first, second, third = spans
    assert all(s.kind is SpanKind.CONSUMER for s in spans)
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["qtasks_mp.task.uuid"] == str(ok.uuid)
    assert (
        first.attributes["qtasks_mp.task.attempt"],
        second.attributes["qtasks_mp.task.attempt"],
    ) == (1, 2)
    assert first.attributes["qtasks_mp.task.status"] == "error"
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert second.attributes["qtasks_mp.task.status"] == "success"
    assert second.status.status_code is StatusCode.UNSET
    assert third.attributes is not None
    assert third.attributes["qtasks_mp.task.status"] == "error"
    assert third.status.description == "ValueError: bad row"


async def test_a_record_with_a_trace_context_becomes_the_parent(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel = OpenTelemetry(tracer_provider=provider)
    app = QueueTasks("otel")

    @app.task(name="t")
    async def t() -> None:
        pass

    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("add_task") as caller:
        headers = OpenTelemetry.inject({})
    assert "traceparent" in headers

    class Record:  # a record as it will be once records carry headers
        def __init__(self) -> None:
            self.uuid, self.lane, self.priority, self.retry = "u", "inline", 0, 0
            self.args: tuple[object, ...] = ()
            self.kwargs: dict[str, object] = {}
            self.headers = headers

    async def run(call: Call) -> None:
        assert trace.get_current_span().get_span_context().trace_id == (
            caller.get_span_context().trace_id
        )

    call = Call(app.specs["t"], Record(), None)  # type: ignore[arg-type]
    await otel(call, run)
    span = exporter.get_finished_spans()[-1]
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
