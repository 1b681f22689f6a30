"""Starts at most `rate` calls per `per_s` seconds (a token bucket), on another executor.

When to use it: an API allows so many calls a second (Telegram: about 30 messages a
second per bot), a mail server throttles you, a scraper must stay polite.

    app = QueueTasks(executors={"telegram": RateLimitedExecutor(InlineExecutor(30), rate=30)})

    @app.task(executor="telegram", retry=3)
    async def send_message(chat_id: int, text: str) -> None: ...

The bucket holds up to `burst` tokens (default: `rate`) and refills at `rate / per_s`
tokens a second; each call takes one when it starts. It limits *starts*, not how many
run at once: that is `inner`'s size.

How it cooperates with the dispatcher (the part worth copying):

- `capacity` is the whole tokens in the bucket (and `inner`'s room): when the bucket is
  empty it says 0, so waiting calls stay in the store, holding no slot and no memory.
- At that moment it sets one timer for when the next token will be there; the timer
  calls `wakeup()`, and the dispatcher looks again. No loop polls the bucket.
- `run` takes its token; if the dispatcher handed over more calls than there were
  tokens, the extra ones reserve a future token (the bucket goes below zero) and sleep
  exactly until it is theirs, so the rule holds even then.

`clock` (default `time.monotonic`) can be replaced in tests to drive the bucket by hand.

Uses only the public API: `Executor`, `Call`, `Executor.wakeup`, `Executor.claim`/`release`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from qtasks_mp import Call, Executor


class RateLimitedExecutor(Executor):
    """Runs calls on `inner`, starting at most `rate` per `per_s` seconds (after a `burst`)."""

    name = "rate_limited"

    def __init__(
        self,
        inner: Executor,
        *,
        rate: float = 30.0,
        per_s: float = 1.0,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if rate <= 0 or per_s <= 0:
            raise ValueError(f"rate and per_s must be > 0, got rate={rate!r}, per_s={per_s!r}")
        self.inner = inner
        self.kinds = inner.kinds
        self.tokens_per_s = rate / per_s
        self.burst = burst if burst is not None else max(1, int(rate))
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._timer: asyncio.TimerHandle | None = None
        self.started = 0  # calls that took a token
        self.reserved = 0  # calls that had to wait for a future token inside `run`
        self.timer_fires = 0  # wake-ups the bucket asked for

    def _refill(self) -> float:
        now = self.clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.tokens_per_s)
        self._stamp = now
        return self._tokens

    def next_token_in_s(self) -> float:
        """Seconds until the bucket holds one whole token (0 if it does now)."""
        return max(0.0, (1.0 - self._refill()) / self.tokens_per_s)

    @property
    def slots(self) -> int:
        return self.inner.slots

    @property
    def capacity(self) -> int:
        tokens = int(self._refill())
        if tokens < 1:
            self._arm()
        return max(0, min(tokens, self.slots - self.active, self.inner.capacity))

    def _arm(self) -> None:
        """Have the dispatcher look again when the next token is there (one timer at most)."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # read from outside the app's loop (stats): nobody to wake
            return
        self._timer = loop.call_later(self.next_token_in_s(), self._token_ready)

    def _token_ready(self) -> None:
        self._timer = None
        self.timer_fires += 1
        self.wakeup()

    async def start(self) -> None:
        self.inner.attach(f"{self.name}.inner", self.wakeup)
        await self.inner.start()

    async def aclose(self, cancel_pending: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.inner.aclose(cancel_pending)

    async def run(self, call: Call) -> Any:
        self._refill()
        self._tokens -= 1.0  # ours now, or reserved: below zero is a queue of reservations
        if self._tokens < 0:
            self.reserved += 1
            try:
                await asyncio.sleep(-self._tokens / self.tokens_per_s)
            except asyncio.CancelledError:
                self._tokens += 1.0  # give the reservation back
                raise
        self.started += 1
        self.inner.claim()
        try:
            return await self.inner.run(call)
        finally:
            self.inner.release()

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "tokens": round(self._refill(), 3),
            "started": self.started,
            "reserved": self.reserved,
            "inner": self.inner.stats(),
        }
