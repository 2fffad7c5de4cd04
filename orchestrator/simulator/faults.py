"""Fault injection per API: latency, 5xx, dropped connections, and token-bucket throttling."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from .clock import Clock
from .profiles import ROUTES, ApiFaults, Profile


class TokenBucket:
    """A token bucket refilled from the clock: `rate` calls per second, at most `burst` at once."""

    def __init__(self, clock: Clock, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst or rate
        self._tokens = self.burst
        self._last = clock.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 if a call may pass now, else the seconds until one may (the Retry-After hint)."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass(frozen=True)
class Decision:
    """What happens to one request before and after it is handled."""

    latency: float = 0.0  # seconds to wait before answering
    throttled_for: float = 0.0  # > 0: answer 429, retry after this long
    error_status: int | None = None  # answer this 5xx without applying the request
    drop_before: bool = False  # close the connection without applying the request
    drop_after: bool = False  # apply the request, then close without answering


class FaultInjector:
    """Draws the faults of each request from the profile with a seeded RNG."""

    def __init__(self, clock: Clock, profile: Profile, seed: int) -> None:
        self.profile = profile
        self._rng = random.Random(f"faults-{seed}")
        self._lock = threading.Lock()
        # One bucket per API: the gateway throttles each API separately, even when they share a setting.
        self._buckets = {
            route: TokenBucket(clock, f.throttle_rate, f.throttle_burst)
            for route, f in ((r, profile.faults_for(r)) for r in ROUTES)
            if f.throttle_rate > 0
        }

    def decide(self, route: str) -> Decision:
        """The faults for one request to an API (throttling first: a throttled call is not processed)."""
        faults: ApiFaults = self.profile.faults_for(route)
        bucket = self._buckets.get(route)
        with self._lock:
            latency = (faults.latency_ms + self._rng.uniform(0, faults.latency_jitter_ms)) / 1000.0
            if bucket is not None:
                wait = bucket.take()
                if wait > 0:
                    return Decision(latency=latency, throttled_for=wait)
            roll = self._rng.random()
            if roll < faults.drop_before_rate:
                return Decision(latency=latency, drop_before=True)
            roll -= faults.drop_before_rate
            if roll < faults.error_5xx_rate:
                return Decision(latency=latency, error_status=self._rng.choice(faults.error_5xx_statuses))
            roll -= faults.error_5xx_rate
            return Decision(latency=latency, drop_after=roll < faults.drop_after_rate)
