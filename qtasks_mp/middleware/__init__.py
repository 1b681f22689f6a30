"""Middleware: one concern per module, chained once per task at app start."""

from .base import CallNext, Middleware
from .call_logging import CallLogging
from .retries import Retries
from .timing import Timing

__all__ = ["CallLogging", "CallNext", "Middleware", "Retries", "Timing"]
