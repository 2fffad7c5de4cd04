"""Progress bookkeeping: turns what the loop tracks into `orchestrator.progress.Snapshot` values for a renderer."""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from orchestrator.clock import Clock
from orchestrator.engine.decide import Tracked, stop_plan
from orchestrator.engine.tuning import Tuning
from orchestrator.lifecycle import ACTIVE, TERMINAL, TaskState
from orchestrator.progress import Snapshot, WaitGroup

RELEASE_SAMPLES = 500


def next_action(t: Tracked, tuning: Tuning) -> str:
    """What the engine does next for an active task, in the operator's words."""
    if t.observe:
        return "read"
    if t.state in (TaskState.DELETABLE, TaskState.DELETING):
        return "delete"
    if t.state is TaskState.UNSUBSCRIBING:
        return "unsubscribe"
    return stop_plan(t, tuning).kind


class ProgressBook:
    """Counts, release times and client figures; reports a Snapshot at most once per `every` seconds."""

    def __init__(self, clock: Clock, tuning: Tuning, report: Callable[[Snapshot], None] | None, *,
                 every: float = 0.25) -> None:
        self.clock, self.tuning, self.report, self.every = clock, tuning, report, every
        self.started = clock.now()
        self.settled_elsewhere: Counter[str] = Counter()  # tasks settled before we joined, or held by others
        self.total = 0
        self.released = 0
        self.release_seconds: deque[float] = deque(maxlen=RELEASE_SAMPLES)
        self._reported_at = -1e18
        self.planning = False

    def stopped_to_released(self, stopped_at: datetime | None, now: datetime) -> None:
        self.released += 1
        if stopped_at is not None:
            self.release_seconds.append(max(0.0, (now - stopped_at).total_seconds()))

    def emit(self, tracked: Iterable[Tracked], *, calls: int, client_stats: Mapping[str, int],
             counts: Mapping[str, int] | None = None, force: bool = False) -> None:
        """Report now (rate-limited unless `force`); `counts` overrides the local counts (shared runs)."""
        if self.report is None:
            return
        mono = self.clock.monotonic()
        if not force and mono - self._reported_at < self.every:
            return
        self._reported_at = mono
        local: Counter[str] = Counter()
        groups: dict[str, tuple[Counter[str], Counter[str]]] = defaultdict(lambda: (Counter(), Counter()))
        targets: dict[str, Counter[str]] = defaultdict(Counter)
        for t in tracked:
            local[t.state.value] += 1
            if t.target:
                targets[t.target][t.state.value] += 1
            if t.state not in TERMINAL:
                actions, remote = groups[t.state.value]
                actions[next_action(t, self.tuning)] += 1
                if t.last_status:
                    remote[t.last_status] += 1
        all_counts = Counter(counts) if counts is not None else local + self.settled_elsewhere
        self.total = max(self.total, sum(all_counts.values()))
        order = [s.value for s in ACTIVE]
        self.report(Snapshot(
            now=self.clock.now(), started=self.started, total=self.total, counts=dict(all_counts),
            groups=tuple(WaitGroup(state, sum(groups[state][0].values()), dict(groups[state][0]),
                                   dict(groups[state][1])) for state in order if state in groups),
            calls=calls, retries=client_stats.get("retries", 0), throttled=client_stats.get("throttled", 0),
            errors=client_stats.get("server_error", 0) + client_stats.get("transport", 0)
            + client_stats.get("malformed", 0),
            released=self.released, release_seconds=tuple(self.release_seconds),
            targets={k: dict(v) for k, v in targets.items()}, planning=self.planning))
