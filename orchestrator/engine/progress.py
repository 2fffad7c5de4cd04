"""Progress bookkeeping: turns what the loop tracks into `orchestrator.snapshot.Snapshot` values for a renderer."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from time import process_time

from orchestrator.clock import Clock
from orchestrator.engine.decide import Tracked, forces_after
from orchestrator.engine.tuning import Tuning
from orchestrator.lifecycle import ACTIVE, TERMINAL, TaskState
from orchestrator.snapshot import AFTER_CHILDREN, Snapshot, WaitGroup

RELEASE_SAMPLES = 500
# A snapshot counts every task: with many tasks, report less often so that counting stays a small share of the
# run (at most about 1/COUNTING_SHARE of the CPU), never less often than every MAX_EVERY seconds.
COUNTING_SHARE = 20
MAX_EVERY = 2.0
_DELETE_STATES = (TaskState.DELETABLE, TaskState.DELETING)
_DONE_OR_DELETING = frozenset({*TERMINAL, *_DELETE_STATES, TaskState.UNSUBSCRIBING})
_RELEASE_STATES = frozenset({TaskState.STOPPING, TaskState.RELEASING})


def next_action(t: Tracked, tuning: Tuning) -> str:
    """What the engine does next for an active task, in the operator's words."""
    return _next_action(t.model.state, t.observe, t.model.last_status, t.stop_attempts, tuning)


def _next_action(state: TaskState, observe: bool, last_status: str | None, stop_attempts: int,
                 tuning: Tuning) -> str:
    if observe:
        return "read"
    if state is TaskState.DELETABLE or state is TaskState.DELETING:
        return "delete"
    if state is TaskState.UNSUBSCRIBING:
        return "unsubscribe"
    # stop_plan(t, tuning).kind, without building the stop's reason
    return "force_terminate" if forces_after(last_status, stop_attempts, tuning) else "terminate"


class ProgressBook:
    """Counts, release times and client figures; reports a Snapshot at most once per `every` seconds (longer
    apart when counting takes long: see COUNTING_SHARE); a forced report always goes out."""

    def __init__(self, clock: Clock, tuning: Tuning, report: Callable[[Snapshot], None] | None, *,
                 every: float = 0.25) -> None:
        self.clock, self.tuning, self.report, self.every = clock, tuning, report, every
        self.started = clock.now()
        self.settled_elsewhere: Counter[str] = Counter()  # tasks settled before we joined, or held by others
        self.total = 0
        self.released = 0
        self.release_seconds: deque[float] = deque(maxlen=RELEASE_SAMPLES)
        self._reported_at = -1e18
        self._gap = every  # seconds until the next unforced report
        self.planning = False
        self.stop_sent: Mapping[str, datetime] = {}  # job id -> when its first stop went out (the loop's record)
        self.children: Mapping[str, set[str]] = {}  # parent job id -> its re-edit children (the loop's record)

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
        if not force and mono - self._reported_at < self._gap:
            return
        self._reported_at = mono
        spent = process_time()
        snapshot = self._snapshot(tracked, calls, client_stats, counts)
        spent = process_time() - spent
        self._gap = min(max(self.every, COUNTING_SHARE * spent), max(self.every, MAX_EVERY))
        self.report(snapshot)

    def _snapshot(self, tracked: Iterable[Tracked], calls: int, client_stats: Mapping[str, int],
                  counts: Mapping[str, int] | None) -> Snapshot:
        # What a snapshot shows of a task is these five facts: count the distinct combinations at C speed (a
        # run's tasks share a few dozen), then tally each combination once.
        if not isinstance(tracked, Collection):
            tracked = list(tracked)
        parents = self._waiting_parents(tracked)
        facts = Counter([(t.model.state, t.target, t.observe, t.model.last_status, t.stop_attempts,
                          t.job_id in parents) for t in tracked])
        local: Counter[TaskState] = Counter()
        actions: dict[TaskState, Counter[str]] = {}
        remote: dict[TaskState, Counter[str]] = {}
        targets: dict[str, Counter[TaskState]] = {}
        tuning = self.tuning
        for (state, target, observe, status, attempts, after_children), n in facts.items():
            local[state] += n
            if target:
                targets.setdefault(target, Counter())[state] += n
            if state not in TERMINAL:
                if state not in actions:
                    actions[state], remote[state] = Counter(), Counter()
                action = AFTER_CHILDREN if after_children else _next_action(state, observe, status, attempts, tuning)
                actions[state][action] += n
                if status:
                    remote[state][status] += n
        if counts is not None:
            all_counts = Counter(counts)
        else:
            all_counts = Counter({state.value: n for state, n in local.items()}) + self.settled_elsewhere
        self.total = max(self.total, sum(all_counts.values()))
        now = self.clock.now()
        youngest, unstarted = self._waits(tracked, now)
        return Snapshot(
            now=now, started=self.started, total=self.total, counts=dict(all_counts),
            groups=tuple(WaitGroup(state.value, sum(actions[state].values()), dict(actions[state]),
                                   dict(remote[state])) for state in ACTIVE if state in actions),
            calls=calls, retries=client_stats.get("retries", 0), throttled=client_stats.get("throttled", 0),
            errors=client_stats.get("server_error", 0) + client_stats.get("transport", 0)
            + client_stats.get("malformed", 0),
            released=self.released, release_seconds=tuple(self.release_seconds),
            targets={k: {state.value: n for state, n in v.items()} for k, v in targets.items()},
            planning=self.planning, youngest_wait=youngest, unstarted=unstarted)

    def _waiting_parents(self, tracked: Collection[Tracked]) -> frozenset[str]:
        """Parents whose re-edit children are still active: they wait for them before anything is sent."""
        if not self.children:
            return frozenset()
        active = {t.job_id for t in tracked if t.model.state not in TERMINAL}
        return frozenset(p for p, kids in self.children.items() if p in active and not kids.isdisjoint(active))

    def _waits(self, tracked: Iterable[Tracked], now: datetime) -> tuple[float | None, int]:
        """The seconds the most recently stopped task still waiting on a release has waited (from its first stop,
        or from its phase's start for one stopped before this process took it over), and the active tasks whose
        stop is still to be sent."""
        stop_sent, youngest, unstarted = self.stop_sent, None, 0
        for t in tracked:
            state = t.model.state
            if state in _DONE_OR_DELETING:
                continue
            since = stop_sent.get(t.job_id)
            if since is None and state in _RELEASE_STATES:
                since = t.phase_started
            if since is not None:
                waited = (now - since).total_seconds()
                youngest = waited if youngest is None or waited < youngest else youngest
            elif state is TaskState.PENDING and not t.delete_phase and t.planned_action != "delete":
                unstarted += 1
        return youngest, unstarted
