"""Progress as a value: what the engine tells a renderer about a run, and nothing about how it is drawn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

AFTER_CHILDREN = "after_children"  # a WaitGroup next action: a parent waiting for its re-edit children


@dataclass(frozen=True)
class WaitGroup:
    """The active tasks in one local state: how many, what the service says of them, what comes next."""

    state: str  # local state: pending, stopping, releasing, deletable, deleting, unsubscribing
    count: int
    next_actions: Mapping[str, int] = field(default_factory=dict)  # e.g. {"poll": 2, "force_terminate": 1}
    remote: Mapping[str, int] = field(default_factory=dict)  # remote statuses last seen in this group


@dataclass(frozen=True)
class Snapshot:
    """A run's progress at one moment."""

    now: datetime
    started: datetime
    total: int  # every task of the run, settled ones included
    counts: Mapping[str, int]  # local state -> tasks
    groups: tuple[WaitGroup, ...] = ()  # the active states, in lifecycle order
    calls: int = 0  # HTTP exchanges so far
    retries: int = 0  # requests sent again (reads retried, throttled calls re-sent)
    throttled: int = 0  # 429 / APIGW.0308 / DRS.M01503 answers
    errors: int = 0  # 5xx, transport faults and malformed answers, recovered or not
    released: int = 0  # tasks whose stop completed in this run
    release_seconds: tuple[float, ...] = ()  # stop -> released durations seen (latest last, capped), for an ETA
    # For the ETA, what is still to wait out: the seconds the most recently stopped task still waiting on its
    # release has waited so far (None: no task waits on a release), and how many active tasks still need their
    # stop sent. `unstarted` None: the engine did not say (the ETA then falls back on the release times alone).
    youngest_wait: float | None = None
    unstarted: int | None = None
    targets: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # target label -> local state -> n
    planning: bool = False  # details are still being read (the plan is pipelined into the run)
