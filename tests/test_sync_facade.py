"""The sync facade: the same core, run in a background loop for plain programs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from qtasks_mp import QueueTasks, SyncTask


def test_add_task_auto_starts_and_waits() -> None:
    app = QueueTasks()
    try:

        @app.task(name="double")
        def double(x: int) -> int:
            return 2 * x

        @app.task
        async def greet(name: str) -> str:
            return f"hi {name}"

        done = app.add_task("double", 21, timeout=5)
        assert done is not None and done.status == "success" and done.returning == 42
        task = app.add_task("greet", "bob")
        assert task is not None
        finished = task.wait_result(timeout=5)
        assert finished is not None and finished.returning == "hi bob"
        got = app.get(task.uuid)
        assert got is not None and got.status == "success"
        assert app.stats()["tasks"]["double"]["ok"] == 1
    finally:
        app.stop()
    assert not app.running


def test_with_block_and_sync_echo_context() -> None:
    with QueueTasks() as app:
        seen: list[int] = []

        @app.task
        def child(n: int) -> None:
            seen.append(n)

        @app.task(echo=True)
        def parent(self: SyncTask) -> None:
            self.add_task("child", 1)

        app.add_task("parent", timeout=5)
        assert app.wait_idle(timeout=5)
        assert seen == [1]


def test_many_threads_add_concurrently() -> None:
    app = QueueTasks()
    count = 0
    lock = threading.Lock()

    @app.task
    def inc() -> None:
        nonlocal count
        with lock:
            count += 1

    def producer() -> None:
        for _ in range(200):
            app.add_task("inc")

    try:
        threads = [threading.Thread(target=producer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert app.wait_idle(timeout=10)
        assert count == 800
    finally:
        app.stop()


def test_a_script_that_exits_drains_its_tasks_at_exit() -> None:
    """A plain script adds tasks and ends; atexit lets them finish (shutdown_timeout)."""
    script = (
        "import sys, time\n"
        "from qtasks_mp import QueueTasks\n"
        "app = QueueTasks()\n"
        "@app.task\n"
        "def slow(i):\n"
        "    time.sleep(0.2)\n"
        "    sys.stdout.write(f'ran {i}\\n')  # one write: threads do not interleave it\n"
        "for i in range(3):\n"
        "    app.add_task('slow', i)\n"
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:3]) == ["ran 0", "ran 1", "ran 2"]
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 25
