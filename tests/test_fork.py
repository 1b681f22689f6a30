"""A program that runs a sync app and then forks: real forks, in a real subprocess.

The child inherits the app objects but not the app's loop thread. It must exit by
itself, promptly, and the parent's app must go on working. Each program runs in a
session of its own, killed whole if it outlives its time, so a hung child cannot
outlive the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(os, "pidfd_open"), reason="needs os.fork, pidfd"
)

PRELUDE = """\
import os, select, signal, sys, time
from qtasks_mp import AppNotRunning, QueueTasks

app = QueueTasks("forking")
app.config.shutdown_timeout = 5.0


@app.task
def double(x):
    return 2 * x


def wait_child(pid, timeout_s):
    '''The child's exit code, or "hung" (and the child killed) after timeout_s.'''
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hung"
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


assert app.add_task("double", 1, timeout=5).returning == 2  # the app runs
"""


def run_program(body: str, timeout_s: float = 40) -> tuple[list[str], str, float]:
    """Run PRELUDE + body; its stdout lines, its stderr, and how long it took."""
    code = PRELUDE + textwrap.dedent(body)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the program and every child it forked
        out, err = proc.communicate()
        pytest.fail(f"the program did not end within {timeout_s}s\n{out}\n{err}")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return out.splitlines(), err, time.monotonic() - t0


def test_a_forked_child_exits_promptly_and_the_parent_app_goes_on() -> None:
    lines, _, _ = run_program(
        """
        pid = os.fork()
        if pid == 0:  # the child: the app is the parent's
            try:
                app.add_task("double", 2)
                print("child: add_task returned")
            except AppNotRunning as e:
                print("child: refused:", e)
            print("child: running", app.running)
            app.stop()  # nothing to stop here: returns
            sys.stdout.flush()
            sys.exit(0)  # atexit runs here: it must not wait on the parent's loop
        t0 = time.monotonic()
        print("parent: child exit", wait_child(pid, 20), flush=True)
        # Promptly: a drain in the child would take at least shutdown_timeout (5 s).
        print("parent: child took under 4s", time.monotonic() - t0 < 4, flush=True)
        print("parent: after fork", app.add_task("double", 21, timeout=5).returning)
        app.add_task("double", 5)  # queued at the end: drained at exit as before
        """
    )
    assert "child: add_task returned" not in lines
    refused = [line for line in lines if line.startswith("child: refused:")]
    assert len(refused) == 1 and "is a fork of it" in refused[0], lines
    assert "child: running False" in lines
    assert "parent: child exit 0" in lines, lines  # not "hung"
    assert "parent: child took under 4s True" in lines
    assert "parent: after fork 42" in lines


def test_a_fork_context_pool_maps_and_the_program_exits() -> None:
    lines, _, took = run_program(
        """
        import multiprocessing

        def square(x):
            return x * x

        pool = multiprocessing.get_context("fork").Pool(2)
        print("map", pool.map(square, range(8)), flush=True)
        pool.close()
        pool.join()  # workers end normally (not terminated): their exit must not hang
        print("parent: after pool", app.add_task("double", 21, timeout=5).returning)
        """
    )
    assert "map [0, 1, 4, 9, 16, 25, 36, 49]" in lines, lines
    assert "parent: after pool 42" in lines
    assert took < 30


def test_an_app_not_running_at_the_fork_can_be_used_in_the_child() -> None:
    lines, _, _ = run_program(
        """
        app.stop()
        other = QueueTasks("never-started")
        other.task(double)
        pid = os.fork()
        if pid == 0:
            print("child:", app.add_task("double", 4, timeout=5).returning, flush=True)
            print("child:", other.add_task("double", 5, timeout=5).returning, flush=True)
            sys.exit(0)  # and the child's own apps drain at its exit
        print("parent: child exit", wait_child(pid, 20), flush=True)
        """
    )
    assert "child: 8" in lines and "child: 10" in lines, lines
    assert "parent: child exit 0" in lines
