"""Middleware: one concern per module, chained once per task at app start.

`OpenTelemetry` (extra `otel`) is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import CallNext, Middleware
from .call_logging import CallLogging
from .retries import Retries
from .timing import Timing

if TYPE_CHECKING:
    from .opentelemetry import OpenTelemetry

__all__ = ["CallLogging", "CallNext", "Middleware", "OpenTelemetry", "Retries", "Timing"]


def __getattr__(name: str) -> Any:
    if name == "OpenTelemetry":
        from .opentelemetry import OpenTelemetry

        return OpenTelemetry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
