"""QTasks' `Logger` (`qtasks.logs`): a standard `logging` logger under `qtasks_mp`.

`Logger(name, subname)` logs to `qtasks_mp.<name>.<subname>`, so the app's level
(`config.logs_default_level`) and handler apply; QTasks' format string is not used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable from Python 3.11 only
    _Adapter = logging.LoggerAdapter


class Logger(_Adapter):
    """`logger.info(...)` and the rest of `logging.Logger`'s methods, for one component."""

    def __init__(
        self,
        name: str = "QueueTasks",
        subname: str | None = None,
        default_level: int | None = None,
        format: str | None = None,
    ) -> None:
        full = f"qtasks_mp.{name}" + (f".{subname}" if subname else "")
        super().__init__(logging.getLogger(full), {"subname": subname or "-"})
        self.component = name
        self.subname = subname
        if default_level is not None:
            self.logger.setLevel(default_level)

    def with_subname(self, subname: str, **kwargs: Any) -> Logger:
        return Logger(self.component, subname)


__all__ = ["Logger"]
