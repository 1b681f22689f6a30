"""QTasks' Django integration: `autodiscover_tasks` (Django is imported when it is called)."""

from .autodiscover import autodiscover_tasks

__all__ = ["autodiscover_tasks"]
