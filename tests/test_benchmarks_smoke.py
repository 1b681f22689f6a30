"""`benchmarks/run.py --quick` runs to the end and prints every comparison; speed is not tested."""

import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def test_quick_benchmark_prints_every_comparison() -> None:
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith(("PASS", "MISS", "info"))]
    names = [row.split(":")[0] for row in rows]
    assert names[:3] == ["async no-op", "sync no-op", "async round trip p50"], done.stdout
    process = set(names[3:])
    assert {"process no-op rate", "process round trip p50"} <= process, done.stdout
    assert any(name.startswith("process map") for name in process), done.stdout
