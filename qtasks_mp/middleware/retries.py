"""`Retries`: turns a failure into a later attempt, through the store.

A `Retry` raised by the task itself counts against the same limit; past it the task
fails with `RetriesExhausted`.

The task options `retry` (attempts after the first), `retry_on_exc` (exception types,
matched with isinstance; None = any `Exception`) and `retry_backoff` (seconds) decide.
The delay doubles with each retry and gets +-25% jitter; 0 (the default) retries at
once, as QTasks does. A `TaskCancelError` (a cancel) is never retried. This
middleware does not sleep: it raises `Retry(delay_s)` and the dispatcher puts the
task back in the store with that ETA, so no slot is held.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, ClassVar

from .. import checks
from ..errors import ArgumentValueError, RetriesExhausted, Retry, SetupError, TaskCancelError
from ..executors.base import Call
from .base import CallNext, Middleware


class Retries(Middleware):
    """Defaults apply to tasks that set no option of their own (precedence: task > default).

    Raises `SetupError` (a `TypeError`) or `ArgumentValueError` (a `ValueError`) for a
    default it could not use; `check_options` refuses a task's retry options at `@app.task`.
    """

    options: ClassVar[frozenset[str]] = frozenset({"retry", "retry_on_exc", "retry_backoff"})

    def __init__(
        self,
        *,
        max_retries: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        backoff_s: float = 0.0,
        max_backoff_s: float = 3600.0,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise SetupError(
                f"Retries: max_retries must be an int >= 0, got {checks.got(max_retries)}; "
                "pass e.g. max_retries=3"
            )
        if max_retries < 0:
            raise ArgumentValueError(
                f"Retries: max_retries must be an int >= 0, got {max_retries!r}; "
                "pass max_retries=0 for no retry"
            )
        for option, value in (("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
            if not checks.is_number(value):
                raise SetupError(
                    f"Retries: {option} must be a number of seconds >= 0, got "
                    f"{checks.got(value)}; pass e.g. {option}=1.0"
                )
            if not (math.isfinite(value) and value >= 0):
                raise ArgumentValueError(
                    f"Retries: {option} must be a finite number of seconds >= 0, got "
                    f"{value!r}; pass e.g. {option}=1.0"
                )
        self.max_retries = max_retries
        self.retry_on = checks.exception_classes(
            lambda msg: SetupError(f"Retries: {msg}"), retry_on, "retry_on"
        )
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)

    def check_options(self, task_name: str, options: Mapping[str, Any]) -> None:
        """`retry`: a whole number >= 0; `retry_on_exc`: Exception classes; `retry_backoff`:
        seconds >= 0. `retry_on_exc` or a backoff on a task that may never retry (no
        `retry=`, and no app-wide `max_retries`) would never take effect: refused too."""
        retry = checks.count(
            task_name, "retry", options.get("retry"), "retries after the first attempt"
        )
        retry_on = checks.exception_classes(
            checks.registration(task_name), options.get("retry_on_exc")
        )
        backoff = checks.seconds_option(
            task_name, "retry_backoff", options.get("retry_backoff"), zero_ok=True
        )
        if retry is None and self.max_retries == 0:
            unused = "retry_on_exc" if retry_on is not None else None
            if unused is None and backoff:
                unused = "retry_backoff"
            if unused is not None:
                shown = repr(backoff)
                if retry_on is not None and unused == "retry_on_exc":
                    shown = f"[{', '.join(e.__name__ for e in retry_on)}]"
                raise checks.registration(task_name)(
                    f"{unused}={shown} has no effect without retry= (no retry by default); "
                    f"add retry=3 (retries after the first attempt), or drop {unused}"
                )

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
        except TaskCancelError:  # a cancelled task is never retried
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
