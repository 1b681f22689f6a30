"""The sync facade: the same core, run in a background loop for plain programs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from polling import read_until

from qtasks_mp import QueueTasks, SyncTask, ThreadExecutor


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


def test_a_script_ended_by_ctrl_c_stops_without_running_its_queue() -> None:
    """Ctrl-C ends the script: the app stops as `stop()` does (the running task ends,
    the queued ones are not run, and the log says so), where a script that ends
    normally drains its queue (before, Ctrl-C drained it too: an analyst's batch went
    on for minutes after Ctrl-C)."""
    script = (
        "import sys, threading, time\n"
        "from qtasks_mp import QueueTasks\n"
        "app = QueueTasks()\n"
        "app.config.thread_workers = 1\n"
        "started = threading.Event()\n"
        "@app.task\n"
        "def job(i):\n"
        "    started.set()\n"
        "    time.sleep(0.5)\n"
        "    sys.stdout.write(f'ran {i}\\n')\n"
        "for i in range(3):\n"
        "    app.add_task('job', i)\n"
        "assert started.wait(20)\n"
        "raise KeyboardInterrupt  # as Ctrl-C would, while job 0 runs\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "KeyboardInterrupt" in out.stderr, out.stderr
    assert out.stdout.splitlines() == ["ran 0"], (out.stdout, out.stderr)
    assert "the program was interrupted (Ctrl-C): stopping" in out.stderr
    assert "1 running tasks finished, 0 cancelled, 2 queued tasks not run" in out.stderr


def test_an_interactive_session_that_went_on_after_a_ctrl_c_still_drains() -> None:
    """In `python -i` (a REPL, IPython), every exception printed is kept as
    sys.last_exc, though the session went on: its normal end still drains the queue
    (the review's case: a Ctrl-C pressed earlier made it drop the queued tasks)."""
    session = (
        "import sys, time\n"
        "from qtasks_mp import QueueTasks\n"
        "app = QueueTasks()\n"
        "app.config.thread_workers = 1\n"
        "@app.task\n"
        "def job(i):\n"
        "    time.sleep(0.2)  # still queued when the session ends\n"
        "    sys.stdout.write(f'ran {i}\\n')\n"
        "\n"
        "raise KeyboardInterrupt\n"
        "for i in range(3): app.add_task('job', i)\n"
        "\n"
    )
    out = subprocess.run(
        [sys.executable, "-i"], input=session, capture_output=True, text=True, timeout=30
    )
    assert "KeyboardInterrupt" in out.stderr, out.stderr
    assert sorted(line for line in out.stdout.splitlines() if line.startswith("ran")) == [
        "ran 0",
        "ran 1",
        "ran 2",
    ], (out.stdout, out.stderr)


RACE = """\
import asyncio, gc, logging, sys, threading
from qtasks_mp import QueueTasks, ThreadExecutor

records = []
handler = logging.Handler()
handler.emit = records.append
for name in ("asyncio", "qtasks_mp"):
    logging.getLogger(name).addHandler(handler)

starts = 0


class SlowStart(ThreadExecutor):
    async def start(self):
        global starts
        starts += 1
        await asyncio.sleep(0.05)  # holds the first start open while the others arrive
        await super().start()


app = QueueTasks("race", executors={"slow": SlowStart(2)})
done = []


@app.task(executor="slow")
def job(i):
    done.append(i)


barrier = threading.Barrier(8)


def producer(k):
    barrier.wait()  # all eight make their first call at once
    for i in range(25):
        app.add_task("job", k * 25 + i)


threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert app.wait_idle(timeout=20)
app.stop()
gc.collect()
messages = [r.getMessage() for r in records]
print("executor starts", starts)
print("app runs", sum(m.startswith("app 'race' started") for m in messages))
print("tasks done", len(done), len(set(done)))
print("pending destroyed", sum("destroyed but it is pending" in m for m in messages))
ours = [t.name for t in threading.enumerate() if t.name.startswith("qtasks_mp")]
print("threads left", [name for name in ours if name != "qtasks_mp-exit"])  # one per process
"""


def test_eight_threads_racing_to_the_first_add_task_start_one_app() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", RACE], capture_output=True, text=True, timeout=50
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "executor starts 1" in lines, lines
    assert "app runs 1" in lines, lines
    assert "tasks done 200 200" in lines, lines
    assert "pending destroyed 0" in lines, lines
    assert "threads left []" in lines, lines  # stop() ended every thread of the app
    assert "Traceback" not in out.stderr, out.stderr


class NoThreads(ThreadExecutor):
    """An executor whose start fails until `fixed` is set."""

    fixed = False

    async def start(self) -> None:
        if not self.fixed:
            raise OSError("cannot start threads: resource limit")
        await super().start()


def test_a_failed_start_raises_to_every_caller_and_a_later_call_starts_it() -> None:
    executor = NoThreads(2)
    app = QueueTasks("failing", executors={"thread": executor})
    errors: list[BaseException] = []
    accepted: list[object] = []

    @app.task
    def job() -> int:
        return 1

    barrier = threading.Barrier(4)

    def first_call() -> None:
        barrier.wait()
        try:
            accepted.append(app.add_task("job"))
        except OSError as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=first_call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert accepted == [] and len(errors) == 4  # nobody was told "accepted"
        assert all("resource limit" in str(e) for e in errors)
        with pytest.raises(OSError, match="resource limit"):
            app.add_task("job", timeout=5)
        assert not app.running
        executor.fixed = True
        done = app.add_task("job", timeout=5)
        assert done is not None and done.returning == 1
    finally:
        app.stop()


def run_script(code: str, timeout_s: float = 40) -> list[str]:
    """Run a program that ends while its app runs; its stdout lines (exit 0, no traceback)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "ERROR" not in out.stderr, out.stderr
    return out.stdout.splitlines()


EXIT_PRELUDE = """\
import asyncio, atexit, sys, threading
from qtasks_mp import QueueTasks
app = QueueTasks()
def say(text):
    sys.stdout.write(text + "\\n")  # one write: threads do not interleave it
    sys.stdout.flush()
"""


def test_the_exit_drain_runs_before_atexit_hooks_registered_after_the_start() -> None:
    """Yours (a database closed at exit) and the process executor's worker kill alike."""
    lines = run_script(
        EXIT_PRELUDE
        + "gate = threading.Event()\n"
        + "@app.task\n"
        + "def job():\n"
        + "    gate.wait(10)\n"
        + "    say('job ran')\n"
        + "app.add_task('job')\n"
        + "atexit.register(lambda: say('atexit hook'))\n"
        + "gate.set()\n"
    )
    assert lines == ["job ran", "atexit hook"], lines


def test_work_added_by_a_non_daemon_thread_after_main_ends_is_drained() -> None:
    lines = run_script(
        EXIT_PRELUDE
        + "@app.task\n"
        + "def job(i):\n"
        + "    say(f'job {i}')\n"
        + "def late_producer():\n"
        + "    threading.main_thread().join()  # the main thread has ended\n"
        + "    for i in range(3):\n"
        + "        app.add_task('job', i)\n"
        + "threading.Thread(target=late_producer).start()\n"
        + "app.start()\n"
    )
    assert sorted(lines) == ["job 0", "job 1", "job 2"], lines


def test_the_loops_default_executor_still_runs_calls_during_the_exit_drain() -> None:
    """`asyncio.to_thread` / `run_in_executor(None, ...)` (the process executor starts
    workers that way): the stdlib's pools refuse work by then; the app's loop has its own."""
    lines = run_script(
        EXIT_PRELUDE
        + "import concurrent.futures\n"
        + "main_ended = concurrent.futures.Future()\n"
        + "def watch():\n"
        + "    threading.main_thread().join()\n"
        + "    main_ended.set_result(None)\n"
        + "threading.Thread(target=watch, daemon=True).start()\n"
        + "@app.task\n"
        + "async def job(i):\n"
        + "    await asyncio.wrap_future(main_ended)  # the program is ending\n"
        + "    await asyncio.to_thread(say, f'to_thread {i}')\n"
        + "for i in range(6):\n"  # more than the loop executor's threads: they queue
        + "    app.add_task('job', i)\n"
    )
    assert sorted(lines) == [f"to_thread {i}" for i in range(6)], lines


def test_process_tasks_registered_after_the_start_are_drained_at_exit() -> None:
    """The process executor is imported (and registers its own atexit hook) only then."""
    lines = run_script(
        EXIT_PRELUDE
        + "@app.task\n"
        + "def first():\n"
        + "    pass\n"
        + "app.add_task('first', timeout=5)  # the app runs\n"
        + "@app.task(executor='process')\n"
        + "def cube(x):\n"
        + "    say(f'cube {x ** 3}')  # in a worker process, on the same stdout\n"
        + "for x in range(3):\n"
        + "    app.add_task('cube', x)\n"
    )
    assert sorted(lines) == ["cube 0", "cube 1", "cube 8"], lines


def test_a_thread_stuck_past_its_timeout_does_not_keep_the_program_alive() -> None:
    """Its thread cannot be stopped; it is a daemon thread, so the program still ends."""
    code = EXIT_PRELUDE + (
        "@app.task(timeout=0.2)\n"
        "def stuck():\n"
        "    threading.Event().wait()  # never returns\n"
        "done = app.add_task('stuck', timeout=10)\n"
        'say(f\'{done.status} {app.stats()["executors"]["thread"]["overrun"]}\')\n'
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["error 1"], out.stdout
    assert "TaskTimeout" in out.stderr  # logged as the task's failure; nothing else went wrong


def test_add_task_before_run_forever_warns_that_the_queue_is_in_memory(tmp_path: Path) -> None:
    """QTasks' worker script adding a task before `app.run_forever()`: the add_task
    started the app with its queue in memory, so run_forever() cannot take the home
    file any more; the log says so, and what to do (before, nothing said it)."""
    script = tmp_path / "worker.py"
    script.write_text(
        "from qtasks_mp import QueueTasks\n"
        "app = QueueTasks('homeapp')\n"
        "@app.task\n"
        "def job(i):\n"
        "    pass\n"
        "if __name__ == '__main__':\n"
        "    app.add_task('job', 1)\n"
        "    app.run_forever()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stderr is not None
        started = read_until(proc.stderr, "press Ctrl-C to stop")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    said = started + err
    assert proc.returncode == 0, said
    assert "with its queue in memory, not in its home file" in said
    assert "Call run_forever() before adding tasks" in said
