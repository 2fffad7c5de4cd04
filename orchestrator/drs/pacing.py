"""One pacing budget per endpoint for the whole process: a per-API request schedule that halves its rate when
the gateway throttles, holds every caller of that API through Retry-After, and earns its rate back one success
at a time, so a throttling storm slows the run down instead of multiplying itself (retries take their slots too)."""

from __future__ import annotations

from collections import Counter, defaultdict

from orchestrator.clock import Clock, RealClock

DEFAULT_RATE = 180.0  # calls/s per API; the gateway's default limit is 200/s per API
MIN_RATE = 1.0  # never slower than one call a second per API
CUT_EVERY = 1.0  # seconds: a burst of 429s answering one burst of calls halves the rate once, not per 429


class Pacer:
    """Spaces calls to each API at its current rate (a burst of `burst` allowed while unthrottled), cuts that
    rate in half on throttling (at most once per CUT_EVERY) and raises it by a tenth per success."""

    def __init__(self, clock: Clock, rate: float = DEFAULT_RATE, burst: int = 10, *,
                 min_rate: float = MIN_RATE) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._clock = clock
        self.max_rate = rate
        self.min_rate = min(min_rate, rate)
        self._burst = burst
        self._rate: dict[str, float] = defaultdict(lambda: self.max_rate)
        self._next: dict[str, float] = defaultdict(lambda: float("-inf"))
        self._paused_until: dict[str, float] = defaultdict(lambda: float("-inf"))
        self._last_cut: dict[str, float] = defaultdict(lambda: float("-inf"))
        self._epoch: Counter[str] = Counter()  # bumped by each throttle: slots booked before it are void
        self.rebooked = 0
        self.waited_seconds = 0.0
        self.pauses = 0
        self.cuts: Counter[str] = Counter()

    def rate(self, api: str) -> float:
        """The calls/s `api` is paced at now."""
        return self._rate[api]

    async def acquire(self, api: str) -> None:
        """Wait for this call's slot (GCRA: at most `burst` calls ahead of the current rate)."""
        while True:
            # No lock: nothing between reading and advancing the schedule awaits: callers cannot interleave.
            now = self._clock.monotonic()
            interval = 1.0 / self._rate[api]
            burst = self._burst if self._rate[api] >= self.max_rate else 1
            tat = max(self._next[api], now)
            start = max(tat - (burst - 1) * interval, self._paused_until[api], now)
            self._next[api] = max(tat, start) + interval
            delay = start - now
            if delay <= 0:
                return
            epoch = self._epoch[api]
            self.waited_seconds += delay
            await self._clock.sleep(delay)
            if self._epoch[api] == epoch:
                return
            # Throttled while we waited: this slot was booked at the old pace. Book again, after the pause.
            self.rebooked += 1

    def pause(self, api: str, seconds: float) -> None:
        """Hold every caller of `api` for `seconds`."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self._paused_until[api]:
            self._paused_until[api] = until
            self.pauses += 1

    def throttled(self, api: str, pause: float) -> None:
        """The gateway said slow down (429 / APIGW.0308 / DRS.M01503): pause `api`, halve its rate."""
        self.pause(api, pause)
        now = self._clock.monotonic()
        # Slots handed out before this answer were booked too fast: void them, restart the schedule after
        # the pause (callers already asleep on one book again when they wake).
        self._epoch[api] += 1
        self._next[api] = max(self._paused_until[api], now)
        if now - self._last_cut[api] >= CUT_EVERY:
            self._last_cut[api] = now
            self._rate[api] = max(self.min_rate, self._rate[api] / 2)
            self.cuts[api] += 1

    def succeeded(self, api: str) -> None:
        """An answer that was not a throttle: earn back a tenth of the rate (at least one call/s)."""
        rate = self._rate[api]
        if rate < self.max_rate:
            self._rate[api] = min(self.max_rate, rate + max(1.0, rate / 10))


_process_pacers: dict[str, Pacer] = {}


def process_pacer(clock: Clock, rate: float = DEFAULT_RATE, *, key: str = "") -> Pacer:
    """The process's one budget on real time for the endpoint `key` (the gateway limits each API per region),
    shared by every client of that endpoint made through it (plan, then execute; a worker's successive runs;
    the targets of one region). An injected clock gets a pacer of its own: tests stay independent."""
    if not isinstance(clock, RealClock):
        return Pacer(clock, rate)
    key = key.strip().rstrip("/").lower()
    pacer = _process_pacers.get(key)
    if pacer is None or pacer.max_rate != rate:
        pacer = _process_pacers[key] = Pacer(clock, rate)
    return pacer
