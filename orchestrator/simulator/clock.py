"""Clocks: the simulator reads time only through one of these, so tests can move time by hand."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of monotonic seconds (durations) and wall time (timestamps, token expiry, X-Sdk-Date)."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to: both readings advance together."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._wall = start or datetime(2024, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move time forward; transitions due by then happen on the next read."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)
