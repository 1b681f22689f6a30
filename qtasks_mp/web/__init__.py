"""The live dashboard (extra `web`): pages, live updates, /metrics, purging.

In the app's own loop, with any store:

```python
async with app:
    async with DashboardServer(AppSource(app), port=8000) as dash:
        print(dash.url)
        ...
# or, as a task that runs until cancelled:
asyncio.create_task(serve_dashboard(app, port=8000))
```

Standalone, over a SQLite store that other processes run: `qtasks-mp web --store
tasks.db` (`main_web`), or `python -m qtasks_mp.web --store tasks.db`.

Importing this package loads nothing of the extra: the names below load on first use
(PEP 562), so `qtasks-mp` can offer `web` and `top` and say which extra is missing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serve import (
        DashboardServer,
        check_store,
        main_web,
        open_store_source,
        serve_dashboard,
        store_path,
    )
    from .server import Dashboard
    from .source import AppSource, StoreSource

__all__ = [
    "AppSource",
    "Dashboard",
    "DashboardServer",
    "StoreSource",
    "check_store",
    "live_command",
    "main_web",
    "open_store_source",
    "serve_dashboard",
    "store_path",
]

_LAZY = {
    "AppSource": ".source",
    "StoreSource": ".source",
    "Dashboard": ".server",
    "DashboardServer": ".serve",
    "check_store": ".serve",
    "main_web": ".serve",
    "open_store_source": ".serve",
    "serve_dashboard": ".serve",
    "store_path": ".serve",
}
EXTRA_MODULES = ("starlette", "uvicorn", "jinja2", "prometheus_client", "rich")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def missing_extra() -> str | None:
    """The first module of the `web` extra that cannot be imported, or None."""
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def live_command(argv: Sequence[str]) -> int | None:
    """`qtasks-mp web ...` / `qtasks-mp top ...`: their exit status; None for other commands.

    For `qtasks_mp/cli.py`'s `main()`, before its own parser: these two parse their
    own options. Without the extra: one line on stderr naming it, exit status 2.
    """
    if not argv or argv[0] not in ("web", "top"):
        return None
    missing = missing_extra()
    if missing is not None:
        print(
            f"qtasks-mp {argv[0]}: error: it needs {missing}: pip install 'qtasks-mp[web]'",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "web":
        from .serve import main_web

        return main_web(list(argv[1:]))
    from ..top import main_top

    return main_top(list(argv[1:]))
