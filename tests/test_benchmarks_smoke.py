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
        timeout=55,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith(("PASS", "MISS", "info"))]
    names = [row.split(":")[0] for row in rows]
    assert names[:3] == ["async no-op", "sync no-op", "async round trip p50"], done.stdout
    process = {name for name in names[3:] if name.startswith("process")}
    assert {"process no-op rate", "process round trip p50"} <= process, done.stdout
    assert any(name.startswith("process map") for name in process), done.stdout
    # the paths users write (bench_users.py), each against its baseline or floor
    for path, baselines in {
        "waited add_task, inline": ["asyncio.gather", "its fire-and-forget+wait_idle"],
        "sync facade": ["ProcessPoolExecutor", "floor (thread-pipe echo)"],
        "process no-ops": ["ProcessPoolExecutor", "multiprocessing.Pool", "floor (asyncio"],
    }.items():
        mine = [row for row in rows if path in row]
        for baseline in baselines:
            assert any(f"app vs {baseline}" in row for row in mine), (path, baseline, done.stdout)
    assert any(name.startswith("CPU batch") for name in names), done.stdout
