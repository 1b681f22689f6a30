"""Dask is optional: nothing imports it until DaskExecutor is used, and without it the
import error says what to install. (Runs in a fresh interpreter: no test imported it.)"""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_package_does_not_import_dask() -> None:
    done = run(
        "import sys, qtasks_mp, qtasks_mp.asyncio, qtasks_mp.executors, qtasks_mp.cli\n"
        "from qtasks_mp.asyncio import QueueTasks\n"
        "QueueTasks()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_dask_the_error_says_what_to_install() -> None:
    done = run(
        "import sys\n"
        "sys.modules['dask'] = sys.modules['distributed'] = None\n"
        "from qtasks_mp.executors.dask import DaskExecutor"
    )
    assert done.returncode != 0
    assert "ImportError: DaskExecutor needs Dask distributed" in done.stderr
    assert "pip install 'qtasks-mp[dask]'" in done.stderr
