"""Every complete Python example in docs/ and README.md runs and exits 0.

Blocks that block forever by design (`run_forever()`) are run until they print their
"running" line and then stopped with SIGINT, which must end them cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for n, code in enumerate(BLOCK.findall(page.read_text()), 1):
            if "import" in code:  # fragments without imports are not complete programs
                found.append((f"{page.name}#{n}", code))
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "run_forever()" not in code:
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=50,
            cwd=tmp_path,
            env=env,
        )
        assert out.returncode == 0, f"{where}\n{out.stdout}\n{out.stderr}"
        return
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "press Ctrl-C to stop" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{where}\n{err}"
    assert "Traceback" not in err, f"{where}\n{err}"
