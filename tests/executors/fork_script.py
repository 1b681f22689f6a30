"""A program with a running process pool that forks: `python fork_script.py MODE`.

It prints one JSON line: what the parent saw. MODE:

- `thread-fork`: the event loop runs in a thread (as under the sync facade); the main
  thread forks and the child exits normally (`sys.exit(0)`: at-exit hooks, teardown).
- `loop-fork`: the coroutine forks; the child closes its copy of the pool (what a child
  leaving `async with app` does), then ends with `os._exit(0)`. (Not `sys.exit`: going
  on to close its copy of the event loop would unregister the parent's descriptors
  from the epoll instance they share, an asyncio hazard of its own.)
- `mp-pool`: a fork-context `multiprocessing.Pool` runs a few calls.
- `outlive`: the child stays alive, blocked on stdin; the parent prints its pids and
  waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfuncs
from proc_support import make_call

from qtasks_mp.executors.process import ProcessExecutor

loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()


def call(coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(30)


async def fork_in_loop(pool: ProcessExecutor) -> int:
    child = os.fork()
    if child == 0:
        await pool.aclose()
        os._exit(0)
    return child


def main(mode: str) -> None:
    pool = ProcessExecutor(2, autoscale=False)
    call(pool.start())
    pids = pool.stats()["pids"]
    code = 0
    if mode == "thread-fork":
        child = os.fork()
        if child == 0:
            sys.exit(0)
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    elif mode == "loop-fork":
        child = call(fork_in_loop(pool))
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    elif mode == "mp-pool":
        with multiprocessing.get_context("fork").Pool(2) as mp:
            assert mp.map(abs, [-1, -2, -3]) == [1, 2, 3]
    elif mode == "outlive":
        assert pool.roster is not None and pool.roster.server.proc is not None
        server = pool.roster.server.proc.pid
        child = os.fork()
        if child == 0:
            sys.stdin.read()  # until the test closes our stdin
            os._exit(0)
        print(json.dumps({"workers": pids, "server": server, "child": child}), flush=True)
        threading.Event().wait()  # until killed
    answered = [call(pool.run(make_call(procfuncs.pid))) for _ in range(6)]
    same = pool.stats()["pids"] == pids
    # Exits are still reported to the parent: a killed worker is seen and replaced.
    os.kill(pids[0], signal.SIGKILL)
    healed = call(until_replaced(pool, pids[0]))
    print(
        json.dumps(
            {
                "child_exit": code,
                "same_workers": same,
                "answered_by_them": set(answered) <= set(pids),
                "healed": healed,
                "crashes": pool.crashes,
            }
        ),
        flush=True,
    )
    call(pool.aclose())


async def until_replaced(pool: ProcessExecutor, dead: int) -> bool:
    for _ in range(1000):  # bounded: 10 s
        pids = pool.stats()["pids"]
        if dead not in pids and len(pids) == 2 and await pool.wait_ready(0.01):
            return True
        await asyncio.sleep(0.01)
    return False


if __name__ == "__main__":
    main(sys.argv[1])
