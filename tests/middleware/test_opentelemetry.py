"""OpenTelemetry: one span per attempt, with the task's id, attempt and status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from qtasks_mp.asyncio import QueueTasks
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


async def test_the_adding_span_is_the_parent_of_every_attempt(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = QueueTasks("otel", middlewares=[OpenTelemetry(tracer_provider=provider)])
    app.config.shutdown_timeout = 2.0
    seen: list[int] = []

    @app.task(name="flaky", retry=1, retry_on_exc=[ConnectionError])
    async def flaky() -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        if len(seen) == 1:
            raise ConnectionError("down")

    tracer = provider.get_tracer("test")
    async with app:
        with tracer.start_as_current_span("request") as request:
            added = await app.add_task("flaky")
        assert added is not None and await app.wait_idle(5)
        untraced = await app.add_task("flaky", timeout=5)  # no span around it: no parent
    assert untraced is not None
    request_ctx = request.get_span_context()
    attempts = [s for s in exporter.get_finished_spans() if s.name == "flaky"][:2]
    assert [s.parent.span_id if s.parent else None for s in attempts] == [request_ctx.span_id] * 2
    assert seen[:2] == [request_ctx.trace_id] * 2
    assert seen[2] != request_ctx.trace_id


PRODUCER = """
import asyncio, sys
from opentelemetry.sdk.trace import TracerProvider
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.middleware.opentelemetry import OpenTelemetry

provider = TracerProvider()
app = QueueTasks("web", store=sys.argv[1], middlewares=[OpenTelemetry(tracer_provider=provider)])

@app.task(name="send_receipt")
async def send_receipt(order: int) -> None: ...

async def main() -> None:
    with provider.get_tracer("web").start_as_current_span("POST /orders") as span:
        await app.add_task("send_receipt", 42)  # no dispatcher here: it waits in the file
    print(format(span.get_span_context().trace_id, "032x"), flush=True)
    await app.store.close()

asyncio.run(main())
"""


async def test_the_trace_crosses_processes_through_a_sqlite_store(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    db = str(tmp_path / "tasks.db")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRODUCER, db, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    producer_trace = int(out.decode().strip(), 16)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = QueueTasks("worker", store=db, middlewares=[OpenTelemetry(tracer_provider=provider)])
    worker.config.shutdown_timeout = 2.0

    @worker.task(name="send_receipt")
    async def send_receipt(order: int) -> None:
        pass

    async with worker:  # the task was added by another process: wait for its span
        for _ in range(500):  # bounded (10 s)
            if any(s.name == "send_receipt" for s in exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.02)
    [span] = [s for s in exporter.get_finished_spans() if s.name == "send_receipt"]
    assert span.context is not None and span.context.trace_id == producer_trace
    assert span.parent is not None and span.parent.is_remote
