"""QTasks' `autodiscover_tasks`: import the tasks modules of a Django project's apps.

Importing a module runs its `@app.task` and `@shared_task` decorators; that is the
whole registration (shared tasks join every app of the process, so also the one
passed here). Django is imported only when the function is called: it is not a
dependency of qtasks_mp.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

logger = logging.getLogger(__name__)


def autodiscover_tasks(app: Any, modules: list[str] | None = None) -> None:
    """Import `<app>.<module>` for each app in Django's `INSTALLED_APPS` that has it.

    Args:
        app: the QueueTasks app (as in QTasks, its tasks are those the modules declare).
        modules: the module names to look for in each Django app. Default: `["tasks"]`.

    An installed app that cannot be imported is logged and skipped, as in QTasks; an
    error raised by a tasks module itself propagates (QTasks logs it and goes on),
    so a project never starts with part of its tasks silently missing.
    """
    try:
        from django.conf import settings
    except ImportError as exc:
        raise ImportError("qtasks_mp.contrib.django needs Django: pip install Django") from exc

    for app_name in settings.INSTALLED_APPS:
        try:
            package = importlib.import_module(app_name)
        except Exception as exc:  # an app Django itself would fail on: say so, go on
            logger.warning("[QTasks] Failed to import %s: %s", app_name, exc)
            continue
        if not hasattr(package, "__path__"):  # a module, not a package: no submodules
            continue
        for module_name in modules or ["tasks"]:
            name = f"{app_name}.{module_name}"
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
                logger.debug("[QTasks] Found %s.py in %s", module_name, app_name)
