"""Executors: where a task's code runs."""

from .base import Call, Executor
from .inline import InlineExecutor
from .thread import ThreadExecutor

__all__ = ["Call", "Executor", "InlineExecutor", "ThreadExecutor"]
