"""examples/cls' app with a SQLite store, whose `add` kills its own worker the first
time it is called with 4 (a crash in the middle of a chain)."""

import os
import signal

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.stores.sqlite import SQLiteStore

app = QueueTasks(store=SQLiteStore("chain.db", lease_s=0.5))


@app.task
def add(a: int, b: int) -> int:
    if a == 4 and not os.path.exists("crashed"):
        open("crashed", "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return a + b


if __name__ == "__main__":
    app.run_forever()
