"""QTasks' `Depends`: a parameter filled by calling a function when the task runs.

    @app.task
    async def test(dep: Annotated[int, Depends(open_db, scope=ScopeEnum.TASK)]): ...

`open_db()` may return a value, an awaitable, or a (sync or async) context manager,
which is entered before the call and, for scope `TASK`, left after it. Scope `WORKER`
(and QTasks' `BROKER`, `STORAGE`, `GLOBAL_CONFIG`, which have no component of their own
here) keeps the value for the life of the process: entered once, never left.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ScopeEnum(str, enum.Enum):
    TASK = "task"
    WORKER = "worker"
    BROKER = "broker"
    STORAGE = "storage"
    GLOBAL_CONFIG = "global_config"


@dataclass(frozen=True, eq=False)
class Depends:
    """`Annotated[T, Depends(func, scope=ScopeEnum.TASK)]`, or a default `=Depends(func)`."""

    func: Callable[..., Any]
    scope: ScopeEnum | str = ScopeEnum.TASK

    def __post_init__(self) -> None:
        if not callable(self.func):
            raise TypeError(f"Depends() takes a function to call, got {self.func!r}")
        try:
            object.__setattr__(self, "scope", ScopeEnum(self.scope))
        except ValueError:
            known = ", ".join(s.value for s in ScopeEnum)
            raise ValueError(f"Depends(scope={self.scope!r}): one of {known}") from None

    @property
    def per_task(self) -> bool:
        return self.scope is ScopeEnum.TASK


__all__ = ["Depends", "ScopeEnum"]
