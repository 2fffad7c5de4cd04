"""Time as a dependency: the engine, the client and the simulator read and wait on a Clock, so tests move time by hand.

One protocol (`Clock`: now, monotonic, async sleep) and two implementations: `RealClock` and `ManualClock`.
`ManualClock` is thread-safe (the simulator's server threads read it while a test advances it) and moves only
when advanced or slept on. `FakeClock` is the same class under the name the engine's tests use.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    """What the engine, the client and the simulator need of time."""

    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall time and real sleeps."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when advanced or slept on; both readings move together; safe across threads."""

    def __init__(self, start: datetime | None = None, monotonic_start: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._wall = start or DEFAULT_START
        self._mono = float(monotonic_start)

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward (a simulator applies the transitions due by then on its next read)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        # Still yield, so other tasks run as they would during a real sleep.
        await asyncio.sleep(0)


# The engine's tests know the manual clock by this name.
FakeClock = ManualClock
