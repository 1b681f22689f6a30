"""QTasks' Django integration (examples/integrations/django blocks 3-4) in a real,
minimal Django project: `ports/django` holds the app `myapp` (its `tasks.py` is block 3)
and `manage.py` (block 4), the import prefix changed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings

from qtasks_mp import QueueTasks, routers, shared_task
from qtasks_mp.asyncio import QueueTasks as AsyncQueueTasks
from qtasks_mp.contrib.django import autodiscover_tasks

pytestmark = pytest.mark.timeout(30)

PROJECT = Path(__file__).parent / "ports" / "django"


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The project on sys.path and Django set up with block 2's INSTALLED_APPS (once per
    process, as Django allows); the project's modules and shared tasks are this test's."""
    monkeypatch.syspath_prepend(str(PROJECT))
    monkeypatch.setattr(routers, "_shared", [])
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.admin",
                "django.contrib.auth",
                "django.contrib.contenttypes",  # admin's and auth's models need it
                "myapp",  # tasks.py will be here
            ]
        )
        django.setup()
    yield
    for name in [n for n in sys.modules if n == "manage" or n.split(".")[0] == "myapp"]:
        del sys.modules[name]


@pytest.mark.usefixtures("project")
def test_autodiscover_imports_the_apps_tasks_modules() -> None:
    """Blocks 3-4: after `autodiscover_tasks(app)`, the tasks of myapp/tasks.py are
    registered and run."""
    assert "myapp.tasks" not in sys.modules
    importlib.import_module("manage")  # block 4: autodiscover_tasks(app)
    tasks = sys.modules["myapp.tasks"]  # imported by autodiscover_tasks, not by us
    assert "hello" in tasks.app.core.specs
    try:
        task = tasks.hello.add_task("World", timeout=5)
    finally:
        tasks.app.stop()
    assert task.returning == "Hello, World!"


@pytest.mark.usefixtures("project")
def test_shared_tasks_join_the_app_passed() -> None:
    """`modules=` names other modules (QTasks' architecture page: ["tasks1", "tasks2"]);
    a shared task declared there is on the app passed; a module not in an app is skipped.
    Other apps made before it also get the task; `add_task` goes through the latest,
    the one passed."""
    earlier = [AsyncQueueTasks() for _ in range(4)]
    app = QueueTasks()
    autodiscover_tasks(app, ["shared", "no_such_module"])
    assert sys.modules["myapp.shared"].greet.registered.app is app
    assert "myapp.shared" in sys.modules
    assert "myapp.no_such_module" not in sys.modules
    assert "myapp.tasks" not in sys.modules  # only the modules named
    try:
        task = sys.modules["myapp.shared"].greet.add_task("Ann", timeout=5)
    finally:
        app.stop()
    assert task.returning == "Hi, Ann!"
    assert all("greet" in other.specs for other in earlier)


@pytest.mark.usefixtures("project")
def test_a_shared_task_goes_through_the_latest_app() -> None:
    """A shared task declared when apps exist (as autodiscovery does) is on all of them;
    its `add_task` goes through the app made last, whatever the order of the process's
    (weak) set of apps: tried with 20 sets."""
    apps = []
    for n in range(20):
        apps += [AsyncQueueTasks(), AsyncQueueTasks()]
        latest = QueueTasks()
        apps.append(latest)
        pending = shared_task(name=f"shared_{n}")(print)
        assert pending.registered.app is latest
        assert all(f"shared_{n}" in getattr(app, "core", app).specs for app in apps)


@pytest.mark.usefixtures("project")
def test_an_error_in_a_tasks_module_is_raised() -> None:
    """Ours, not QTasks' (which logs it and goes on): a tasks module that fails to import
    stops the discovery, so no project starts with part of its tasks missing."""
    with pytest.raises(RuntimeError, match="broken tasks module"):
        autodiscover_tasks(QueueTasks(), ["broken"])


def test_django_is_imported_only_when_called() -> None:
    """Django is not a dependency of qtasks_mp: importing the contrib does not import it."""
    code = (
        "import sys, qtasks_mp.contrib.django\n"
        "assert 'django' not in sys.modules, sorted(n for n in sys.modules if 'django' in n)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
