"""One of two producers racing to add the same unique task (tests/stores/test_unique_processes.py).

argv: store URL, start time (time.time()), count. Adds `count` tasks "charge" with the
key "order-42" from the moment given, concurrently, and prints the uuids it got back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from qtasks_mp.asyncio import QueueTasks


async def main(url: str, start_at: float, count: int) -> None:
    app = QueueTasks("producer", store=url)

    @app.task(name="charge")
    async def charge(n: int) -> int:
        return n

    await app.store.open(app.config, lambda: None)  # connected before the start signal
    await asyncio.sleep(max(0.0, start_at - time.time()))
    tasks = await asyncio.gather(
        *(app.add_task("charge", i, unique_key="order-42") for i in range(count))
    )
    print(json.dumps(sorted({str(t.uuid) for t in tasks if t is not None})))
    await app.store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
