"""`CallLogging`: a log line when a task starts and ends; failures with traceback at ERROR."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..checks import got
from ..errors import Retry, SetupError, TaskCancelError
from ..executors.base import Call
from .base import CallNext, Middleware

log = logging.getLogger("qtasks_mp.calls")


class CallLogging(Middleware):
    """`level` is for start and success lines (DEBUG by default, so they cost nothing
    unless asked for); a retry is a WARNING, a final failure an ERROR with traceback."""

    def __init__(self, *, level: int = logging.DEBUG) -> None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise SetupError(
                f"CallLogging: level must be a logging level (an int), got {got(level)}; "
                "pass e.g. level=logging.INFO"
            )
        self.level = level

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        verbose = log.isEnabledFor(self.level)
        if verbose:
            log.log(
                self.level,
                "start %s %s (attempt %d)",
                call.task_name,
                call.record.uuid,
                call.attempt,
            )
            start = time.perf_counter()
        try:
            result = await call_next(call)
        except Retry as r:
            log.warning("%s %s: %s", call.task_name, call.record.uuid, r)
            raise
        except TaskCancelError as c:  # not a failure: one line, no traceback
            log.info("%s %s: %s", call.task_name, call.record.uuid, c)
            raise
        except Exception:
            log.exception(
                "%s %s failed (attempt %d)", call.task_name, call.record.uuid, call.attempt
            )
            raise
        if verbose:
            log.log(
                self.level,
                "done %s %s in %.3fs",
                call.task_name,
                call.record.uuid,
                time.perf_counter() - start,
            )
        return result
