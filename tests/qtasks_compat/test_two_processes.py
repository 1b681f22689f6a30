"""QTasks' examples in QTasks' own topology: a worker process runs the app
(`app.run_forever()` or `qtasks-mp -A module:app run`), client processes import the
app's module and add tasks. Each asserts the outcome QTasks documents."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from compat_support import Proc, copy_port, python, remove_home, run, worker

pytestmark = pytest.mark.timeout(120)


def test_getting_started_worker_and_client(ported: dict[str, Path], tmp_path: Path) -> None:
    """getting_started.md blocks 4 and 5: python app.py; python add_tasks.py."""
    where = ported["gs"] = copy_port("getting_started", tmp_path)
    proc = worker(where, "app.py")
    try:
        out = python("add_tasks.py", where).split()
        assert out == ["new", "new", "Test", "new"]
        proc.wait_for("Test", count=3)  # the worker printed each "Test" it ran (threads)
        proc.wait_for("ZeroDivisionError")  # error_zero ran there, and failed
    finally:
        proc.stop()


def test_getting_started_through_the_cli(ported: dict[str, Path], tmp_path: Path) -> None:
    """getting_started.md block 3, option 2: `qtasks -A app:app run` is
    `qtasks-mp -A app:app run` (here `python -m qtasks_mp`)."""
    where = ported["gs-cli"] = copy_port("getting_started", tmp_path)
    proc = worker(where, "", via_cli="app:app")
    try:
        assert python("add_tasks.py", where).split()[2] == "Test"
    finally:
        proc.stop()


def test_async_app_and_an_asyncio_client(ported: dict[str, Path], tmp_path: Path) -> None:
    """getting_started.md block 6, added to as examples/index.md block 3 does."""
    where = ported["gs-async"] = copy_port("getting_started", tmp_path)
    proc = worker(where, "async_app.py")
    try:
        assert python("add_async.py", where).strip() == "Asynchronous example"
    finally:
        proc.stop()


def test_readme_quick_start_and_generator(ported: dict[str, Path], tmp_path: Path) -> None:
    """README blocks 1-4: "Hello"; divide(1, 0) ends in error; counter(5) -> [7..11]."""
    where = ported["readme"] = copy_port("readme", tmp_path)
    proc = worker(where, "qtasks_app.py")
    try:
        hello, status, counted = python("calls.py", where).splitlines()
        assert hello == "Hello"
        assert status == "error"  # README writes "ERROR"; QTasks' status value is "error"
        assert counted == "[7, 8, 9, 10, 11]"
    finally:
        proc.stop()


def test_examples_index_task_name(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/index.md blocks 1-2: the result; an unregistered task_name= is refused
    at add_task (QTasks' worker fails it later)."""
    where = ported["index"] = copy_port("docs_index", tmp_path)
    proc = worker(where, "print_app.py")
    try:
        assert python("add_print.py", where).splitlines() == [
            "Hello, world!",
            "refused: TaskNotFound",
        ]
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def cls_worker(
    ported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Proc]]:
    """examples/cls: one worker for both of its clients."""
    where = ported["cls"] = copy_port("cls", tmp_path_factory.mktemp("cls"))
    proc = worker(where, "based_async_app_cls.py")
    yield where, proc
    proc.stop()


def test_gather_of_pre_built_calls(cls_worker: tuple[Path, Proc]) -> None:
    """examples/cls/test_async_cls.py: pre-built calls `add(2, 3, timeout=50)` added
    with asyncio.gather: four finished tasks, 5, 7, 9, 13."""
    where, _ = cls_worker
    out = python("test_async_cls.py", where)
    assert out.count("TaskCall(task_name='add'") == 4  # the pre-built calls, printed
    assert out.splitlines()[1].count("status='success'") == 4
    for value in (5, 7, 9, 13):
        assert f"returning={value})" in out


def test_chain_passes_each_result_on(cls_worker: tuple[Path, Proc]) -> None:
    """examples/cls/test_async_taskutils_wait.py: chain(add(2, 2), add(4), add(8)) ->
    4, 8, 16, through the worker's store."""
    where, _ = cls_worker
    out = python("test_async_taskutils_wait.py", where)
    results = out.splitlines()[1]
    assert [f"returning={v})" in results for v in (4, 8, 16)] == [True] * 3, out


def test_depends_async(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/depends (async): 500 tasks, each opening and closing its dependency."""
    where = ported["dep"] = copy_port("depends", tmp_path)
    proc = worker(where, "based_async_depends.py")
    try:
        python("test_async_depends_wait.py", where)
        out = proc.wait_for("Close", count=500)
        assert out.count("Open") == 500 and out.count("55555 123") == 500
    finally:
        proc.stop()


def test_depends_sync(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/depends (sync): 10 tasks added from 4 threads; 123 printed by each."""
    where = ported["dep-sync"] = copy_port("depends", tmp_path)
    proc = worker(where, "based_sync_depends.py")
    try:
        python("test_sync_depends_wait.py", where)
        out = proc.wait_for("Close", count=10)
        # the tasks run on threads: their prints may interleave ("123Open", "123123"); the
        # log's lines (times, ids) are left out of the count
        printed = "\n".join(line for line in out.splitlines() if "qtasks_mp" not in line)
        assert printed.count("Open") == 10 and printed.count("123") == 10, out
    finally:
        proc.stop()


def test_states(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/states: step1 sets the state, step2 (in the worker) reads it: "ok"."""
    where = ported["states"] = copy_port("states", tmp_path)
    proc = worker(where, "based_async_states_app.py")
    try:
        out = python("test_async_task_wait_states.py", where)
        assert "status='success'" in out and "returning='ok'" in out
        proc.wait_for("{'state': 'await_phone', 'step': 1, 'prompt': 'Enter your phone number'}")
    finally:
        proc.stop()


def test_based_async_app(ported: dict[str, Path], tmp_path: Path) -> None:
    """examples/async: the app with a router, shared tasks, pydantic, stats; its
    client adds example_pydantic("Test", value=42)."""
    where = ported["async"] = copy_port("async", tmp_path)
    proc = worker(where, "based_async_app.py")
    try:
        out = python("test_async_task_wait.py", where)
        assert "status='success'" in out and "returning='Hello, Test!'" in out, out
    finally:
        proc.stop()


def test_client_without_worker_for_a_private_store_fails_saying_what_to_add(
    tmp_path: Path,
) -> None:
    """A worker whose store only it can see (a MemoryStore given in the module): the
    client's first add_task fails, saying what to give both sides."""
    (tmp_path / "private_app.py").write_text(
        "from qtasks_mp import QueueTasks, MemoryStore\n"
        "app = QueueTasks(store=MemoryStore())\n"
        "@app.task\ndef f(): return 1\n"
        "if __name__ == '__main__':\n    app.run_forever()\n"
    )
    (tmp_path / "client.py").write_text("from private_app import app\napp.add_task('f')\n")
    proc = worker(tmp_path, "private_app.py")
    try:
        out = run([sys.executable, "client.py"], tmp_path)
        assert out.returncode == 1
        assert "AppNotRunning" in out.stderr and 'store="sqlite:///tasks.db"' in out.stderr
    finally:
        proc.stop()


def test_chain_survives_a_worker_restart(tmp_path: Path) -> None:
    """A chain runs through the store: its worker is SIGKILLed in the second step, a
    new worker takes over (the step's lease runs out), and the client gets 4, 8, 16."""
    for name in ("chain_app.py", "chain_client.py"):
        shutil.copy(Path(__file__).parent / "apps" / name, tmp_path)
    first = Proc([sys.executable, "chain_app.py"], tmp_path)
    first.wait_for("press Ctrl-C to stop")
    client = Proc([sys.executable, "chain_client.py"], tmp_path)
    assert first.proc.wait(timeout=60) == -9  # killed itself in add(4, 4)
    first.stop_reader()
    second = worker(tmp_path, "chain_app.py")
    try:
        assert client.proc.wait(timeout=60) == 0
        client.wait_for("[4, 8, 16]")
    finally:
        client.stop_reader()
        second.stop()


def test_events_in_the_worker(tmp_path: Path) -> None:
    """architecture/components/schemas.md block 1 (`@app.events.on.worker_running`):
    the worker's handlers are told it runs, that a client's task succeeded, that it
    stopped; the client's own app (not running) is told nothing."""
    for name in ("events_app.py", "events_client.py"):
        shutil.copy(Path(__file__).parent / "apps" / name, tmp_path)
    proc = worker(tmp_path, "events_app.py")
    try:
        proc.wait_for("event: worker_running")
        assert python("events_client.py", tmp_path).split() == ["5"]
        proc.wait_for("event: task_success add 5")
    finally:
        out = proc.stop()
        remove_home(tmp_path / "events_app.py")
    assert out.count("event: worker_running") == 1
    assert out.index("event: task_success add 5") < out.index("event: stopping")
