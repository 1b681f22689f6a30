"""`Retries`: turns a failure into a later attempt, through the store.

A `Retry` raised by the task itself counts against the same limit; past it the task
fails with `RetriesExhausted`.

The task options `retry` (attempts after the first), `retry_on_exc` (exception types,
matched with isinstance; None = any `Exception`) and `retry_backoff` (seconds) decide.
The delay doubles with each retry and gets +-25% jitter; 0 (the default) retries at
once, as QTasks does. This middleware does not sleep: it raises `Retry(delay_s)` and
the dispatcher puts the task back in the store with that ETA, so no slot is held.
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import RetriesExhausted, Retry
from ..executors.base import Call
from .base import CallNext, Middleware


class Retries(Middleware):
    """Defaults apply to tasks that set no option of their own (precedence: task > default)."""

    def __init__(
        self,
        *,
        max_retries: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        backoff_s: float = 0.0,
        max_backoff_s: float = 3600.0,
    ) -> None:
        self.max_retries = max_retries
        self.retry_on = retry_on
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        try:
            return await call_next(call)
        except Retry as r:
            limit = self.max_retries if call.spec.retry is None else call.spec.retry
            if call.record.retry >= limit:
                raise RetriesExhausted(
                    f"task {call.task_name!r} asked for a retry ({r}) but has used its "
                    f"{limit} retries; raise the task's retry= to allow more"
                ) from r
            raise
        except Exception as exc:
            spec = call.spec
            limit = self.max_retries if spec.retry is None else spec.retry
            done = call.record.retry
            if done >= limit:
                raise
            retry_on = self.retry_on if spec.retry_on_exc is None else spec.retry_on_exc
            if retry_on is not None and not isinstance(exc, retry_on):
                raise
            raise Retry(self.delay_s(spec.retry_backoff, done), _reason(exc, done, limit)) from exc

    def delay_s(self, backoff_s: float | None, done: int) -> float:
        """Seconds before retry number `done + 1`: backoff * 2**done, +-25% jitter, capped."""
        base = self.backoff_s if backoff_s is None else backoff_s
        if base <= 0:
            return 0.0
        delay = min(self.max_backoff_s, base * (2**done))
        return float(delay * random.uniform(0.75, 1.25))


def _reason(exc: BaseException, done: int, limit: int) -> str:
    return f"retry {done + 1}/{limit} after {type(exc).__name__}: {exc}"
