"""`benchmarks/web_million.py` runs to the end on a small store; speed is not tested."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "web_million.py"


def test_page_load_benchmark_prints_every_page(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "3000", "--keep", str(tmp_path / "b.db")],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    for page in ("tasks, first page", "status=error", "task page", "full counts", "metrics"):
        assert page in done.stdout, done.stdout
