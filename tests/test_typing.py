"""@app.task keeps the function's signature for type checkers (ParamSpec)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SNIPPET = """
from qtasks_mp.asyncio import QueueTasks

app = QueueTasks()


@app.task(name="send_reminder", retry=2)
async def send_reminder(chat_id: int, text: str) -> str:
    return text


@app.task
def double(x: int) -> int:
    return 2 * x


reveal_type(double.fn(3))
reveal_type(double(3))
double("three")
send_reminder(1)
"""


@pytest.mark.timeout(120)
def test_decorated_tasks_keep_their_signatures(tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text(SNIPPET)
    out, _, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(path)]
    )
    assert re.search(r'Revealed type is "(builtins\.)?int"', out), out
    assert 'Revealed type is "qtasks_mp.registries.TaskCall"' in out, out  # QTasks' pre-built call
    assert 'Argument 1 to "__call__" of "RegisteredTask" has incompatible type "str"' in out
    assert 'Missing positional argument "text"' in out
