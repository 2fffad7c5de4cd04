"""What the loop's pieces (reads, sends, unsubscribe, schedule, completeness) need of the engine: a Protocol, so
they depend on this description and not on engine/loop.py (which imports them)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from orchestrator.clock import Clock
from orchestrator.drs.client import DrsClient
from orchestrator.engine.claims import Leases
from orchestrator.engine.decide import Decision, Tracked
from orchestrator.engine.feed import Feed
from orchestrator.engine.progress import ProgressBook
from orchestrator.engine.tuning import Tuning
from orchestrator.errors import EngineAbort
from orchestrator.lifecycle import Lifecycle, Step
from orchestrator.store.repo import Change, Context, Event, Store
from orchestrator.store.schema import Task
from orchestrator.wire import Exchange


class EngineLike(Protocol):
    store: Store
    client: DrsClient
    ctx: Context
    tuning: Tuning
    clock: Clock
    run_id: str
    lifecycle: Lifecycle
    fresh: bool
    shared: bool
    stop_event: asyncio.Event
    feed: Feed | None
    rng: random.Random
    tasks: dict[str, Tracked]
    children: dict[str, set[str]]
    exchanges: list[Exchange]
    stats: Counter[str]
    deadline: datetime
    leases: Leases
    book: ProgressBook
    abort: EngineAbort | None
    left_behind: list[dict[str, Any]]
    reader: Any
    sender: Any
    early: Any  # completeness.EarlyReads

    def active(self) -> list[Tracked]: ...
    def apply(self, t: Tracked, d: Decision) -> Change | None: ...
    def row(self, t: Tracked, event: Event | None = None, **extra: Any) -> Change: ...
    def record_step(self, t: Tracked, step: Step, reason: str) -> Change: ...
    def stop_sent(self, t: Tracked) -> None: ...
    def commit(self, changes: Sequence[Change | None]) -> None: ...
    def report(self, *, force: bool = False) -> None: ...
    def adopt(self, rows: Iterable[Task], *, fresh: bool) -> int: ...
    def invalidate(self) -> None: ...
