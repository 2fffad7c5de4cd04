"""Fault injection per API: latency, 5xx, dropped connections, throttling, and bad read answers.

Faults come from the profile's rates (seeded) and from knobs a test sets: "the next N answers of this API get
this fault" (times=None: every answer until cleared). A knob wins over the profile for the request it hits.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from orchestrator.clock import Clock

from .answers import ANSWER_FAULTS
from .profiles import READ_ROUTES, ROUTES, ApiFaults, Profile

TRANSPORT_FAULTS: tuple[str, ...] = ("drop_before", "drop_after", "error_5xx", "error_4xx", "latency")
KNOB_FAULTS: tuple[str, ...] = (*TRANSPORT_FAULTS, *ANSWER_FAULTS)


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
    answer: str | None = None  # a read-answer fault (answers.ANSWER_FAULTS)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        """The fault's name, for the ledger (None: a clean request)."""
        if self.throttled_for:
            return "throttled"
        if self.error_status is not None:
            return f"error_{self.error_status}"
        if self.drop_before:
            return "drop_before"
        if self.drop_after:
            return "drop_after"
        return self.answer


@dataclass
class Knob:
    """A fault set by a test: on the next `times` requests of `route` (None: until cleared)."""

    route: str
    fault: str
    times: int | None = 1
    params: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"route": self.route, "fault": self.fault, "times": self.times, "params": dict(self.params)}


class FaultInjector:
    """Draws the faults of each request from the profile with a seeded RNG, after any knob a test set."""

    def __init__(self, clock: Clock, profile: Profile, seed: int) -> None:
        self.profile = profile
        self.rng = random.Random(f"faults-{seed}")
        self._lock = threading.Lock()
        self._knobs: list[Knob] = []
        # One bucket per API: the gateway throttles each API separately, even when they share a setting.
        self._buckets = {
            route: TokenBucket(clock, f.throttle_rate, f.throttle_burst)
            for route, f in ((r, profile.faults_for(r)) for r in ROUTES)
            if f.throttle_rate > 0
        }

    # -- knobs --------------------------------------------------------------------------------------------

    def set(self, route: str, fault: str, times: int | None = 1, **params: Any) -> Knob:
        """Queue a fault for the next `times` requests of an API (times=None: every request until cleared)."""
        if route not in ROUTES:
            raise ValueError(f"unknown API {route!r}; known: {', '.join(ROUTES)}")
        if fault not in KNOB_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(KNOB_FAULTS)}")
        if fault in ANSWER_FAULTS and route not in READ_ROUTES:
            raise ValueError(f"{fault} is a read-answer fault: only for {', '.join(READ_ROUTES)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every request)")
        knob = Knob(route, fault, times, dict(params))
        with self._lock:
            self._knobs.append(knob)
        return knob

    def clear(self, route: str | None = None) -> None:
        with self._lock:
            self._knobs = [k for k in self._knobs if route is not None and k.route != route]

    def knobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [k.view() for k in self._knobs]

    def _take_knob(self, route: str) -> Knob | None:
        for knob in self._knobs:
            if knob.route == route:
                if knob.times is not None:
                    knob.times -= 1
                    if knob.times <= 0:
                        self._knobs.remove(knob)
                return knob
        return None

    # -- per request --------------------------------------------------------------------------------------

    def decide(self, route: str) -> Decision:
        """The faults for one request to an API (throttling first: a throttled call is not processed)."""
        faults: ApiFaults = self.profile.faults_for(route)
        bucket = self._buckets.get(route)
        with self._lock:
            latency = (faults.latency_ms + self.rng.uniform(0, faults.latency_jitter_ms)) / 1000.0
            knob = self._take_knob(route)
            if knob is not None:
                return self._from_knob(knob, latency, faults)
            if bucket is not None:
                wait = bucket.take()
                if wait > 0:
                    return Decision(latency=latency, throttled_for=wait)
            roll = self.rng.random()
            if roll < faults.drop_before_rate:
                return Decision(latency=latency, drop_before=True)
            roll -= faults.drop_before_rate
            if roll < faults.error_5xx_rate:
                return Decision(latency=latency, error_status=self.rng.choice(faults.error_5xx_statuses))
            roll -= faults.error_5xx_rate
            if roll < faults.drop_after_rate:
                return Decision(latency=latency, drop_after=True)
            if route in READ_ROUTES:
                return self._answer_fault(latency, faults)
            return Decision(latency=latency)

    def _answer_fault(self, latency: float, faults: ApiFaults) -> Decision:
        roll = self.rng.random()
        for kind in ANSWER_FAULTS:
            rate = float(getattr(faults, f"{kind}_rate", 0.0))
            if roll < rate:
                params = {"byte_ms": faults.trickle_byte_ms, "seconds": faults.freeze_seconds}
                return Decision(latency=latency, answer=kind, params=params)
            roll -= rate
        return Decision(latency=latency)

    @staticmethod
    def _from_knob(knob: Knob, latency: float, faults: ApiFaults) -> Decision:
        p = knob.params
        if knob.fault == "latency":
            return Decision(latency=float(p.get("ms", 1000.0)) / 1000.0)
        if knob.fault == "drop_before":
            return Decision(latency=latency, drop_before=True)
        if knob.fault == "drop_after":
            return Decision(latency=latency, drop_after=True)
        if knob.fault == "error_5xx":
            return Decision(latency=latency, error_status=int(p.get("status", 503)))
        if knob.fault == "error_4xx":  # the whole call refused, with a service code and message (not applied)
            return Decision(latency=latency, error_status=int(p.get("status", 400)),
                            params={"code": str(p.get("code", "CBC.0101")),
                                    "message": str(p.get("message", "The request was refused."))})
        params = {"byte_ms": faults.trickle_byte_ms, "seconds": faults.freeze_seconds, **p}
        return Decision(latency=latency, answer=knob.fault, params=params)
