"""One pacing budget for the whole process: a per-API request schedule plus a shared pause after throttling,
so a throttling storm slows the run down instead of multiplying itself."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from orchestrator.clock import Clock

DEFAULT_RATE = 180.0  # calls/s per API; the gateway's default limit is 200/s per API


class Pacer:
    """Spaces calls to each API at `rate` per second (a burst of `burst` allowed) and holds every caller of an
    API while it is throttled."""

    def __init__(self, clock: Clock, rate: float = DEFAULT_RATE, burst: int = 10) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._clock = clock
        self._interval = 1.0 / rate
        self._burst = burst
        self._next: dict[str, float] = defaultdict(lambda: float("-inf"))
        self._paused_until: dict[str, float] = defaultdict(lambda: float("-inf"))
        self._lock = asyncio.Lock()
        self.waited_seconds = 0.0
        self.pauses = 0

    async def acquire(self, api: str) -> None:
        """Wait for this call's slot (GCRA: at most `burst` calls ahead of the steady rate)."""
        async with self._lock:
            now = self._clock.monotonic()
            tat = max(self._next[api], now)
            start = max(tat - self._burst * self._interval, self._paused_until[api], now)
            self._next[api] = max(tat, start) + self._interval
        delay = start - now
        if delay > 0:
            self.waited_seconds += delay
            await self._clock.sleep(delay)

    def pause(self, api: str, seconds: float) -> None:
        """Hold every caller of `api` for `seconds` (after a 429 or DRS.M01503)."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self._paused_until[api]:
            self._paused_until[api] = until
            self.pauses += 1
