"""A program whose process pool runs, and that forks: the child must leave the parent's
workers alone, and exit normally. Each case is a real program (`fork_script.py`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from proc_support import gone

SCRIPT = Path(__file__).with_name("fork_script.py")


@pytest.mark.parametrize("mode", ["thread-fork", "loop-fork", "mp-pool"])
def test_a_forked_child_exits_and_the_parents_workers_still_answer(mode: str) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), mode], capture_output=True, text=True, timeout=50
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {
        "child_exit": 0,
        "same_workers": True,  # the child stopped none of them
        "answered_by_them": True,
        "healed": True,  # the parent still hears of its workers' exits
        "crashes": 1,  # the one the script killed on purpose
    }, out.stderr


def test_the_parents_workers_die_with_it_while_a_forked_child_lives() -> None:
    parent = subprocess.Popen(
        [sys.executable, str(SCRIPT), "outlive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        assert parent.stdout is not None and parent.stdin is not None
        seen = json.loads(parent.stdout.readline())
        child = seen["child"]
        ours = [*seen["workers"], seen["server"]]
        assert all(psutil.pid_exists(p) for p in ours)
        parent.kill()  # SIGKILL: no cleanup runs in the parent
        parent.wait(10)
        # The child still holds copies of the parent's descriptors; they are /dev/null
        # now, so the workers and the fork server see their parent gone.
        assert gone(ours), "the parent's workers outlived it"
        assert psutil.pid_exists(child)
    finally:
        parent.kill()
        parent.wait(10)
        if child is not None:
            with_child_gone(child)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()


def with_child_gone(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    gone([pid])
