"""The lease protocol of shared runs (PostgreSQL): claim in batches, renew by heartbeat, never send past a lease.

Every task a worker holds is its own until at least `valid_until` (monotonic). Another worker takes a task over
only once its lease has expired; a destructive request of ours is abandoned a third of a lease before that can
happen, so a request of ours is only ever in flight while the task is still ours. The one lease rule: renew,
re-claim and check every third of a lease (`Tuning.lease_check`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

from orchestrator.clock import Clock
from orchestrator.engine.tuning import Tuning
from orchestrator.errors import OutcomeUnknown, StoreError
from orchestrator.store.models import Task
from orchestrator.store.repo import Context, Store

T = TypeVar("T")
log = logging.getLogger("drs_teardown.engine")


class Leases:
    """One worker's leases on one run."""

    def __init__(self, store: Store, run_id: str, ctx: Context, tuning: Tuning, clock: Clock, *,
                 shared: bool, stats: Counter[str]) -> None:
        self.store, self.run_id, self.ctx, self.tuning, self.clock = store, run_id, ctx, tuning, clock
        self.shared = shared
        self.lease = timedelta(seconds=tuning.lease_seconds)
        self.valid_until = 0.0
        self.stamped_at = 0.0  # the last commit that re-checked and extended the leases it touched
        self.last_claim = -1e18
        self.claim_more = True  # a claim came back full: unclaimed work may remain
        self.lost: set[str] = set()  # tasks a heartbeat found another worker holds
        self.orphans = False  # a heartbeat found tasks we hold that the loop does not track
        self.doubt = False  # a send was abandoned: let the leases run out, do not release them
        self.stats = stats  # the engine's counters

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def claim(self) -> list[Task]:
        """Take more tasks: all of them on SQLite; one batch at a time on a shared database."""
        now, started = self.clock.now(), self.clock.monotonic()
        limit = self.tuning.claim_size if self.shared else None
        rows = self.store.claim(self.run_id, self.ctx.worker, now, self.lease, limit,
                                ignore_leases=not self.shared, ctx=self.ctx if self.shared else None)
        if not self.valid_until:
            self.valid_until = started + self.lease.total_seconds()
        self.last_claim = started
        self.claim_more = limit is not None and len(rows) >= limit
        return rows

    def held(self) -> list[Task]:
        """Every active task we still hold, leases renewed: the way back after a LeaseLost."""
        started = self.clock.monotonic()
        rows = self.store.held(self.run_id, self.ctx.worker, self.clock.now(), self.lease)
        self.valid_until = started + self.lease.total_seconds()
        self.lost.clear()
        return rows

    def committed(self, started: float) -> None:
        """A commit that re-checked and extended our leases went through (started at monotonic `started`)."""
        if self.shared:
            self.stamped_at = started

    def due_for_claim(self) -> bool:
        return self.claim_more or self.clock.monotonic() - self.last_claim >= self.tuning.lease_check

    def take_lost(self, active: Sequence[str]) -> set[str]:
        """The job ids, among `active`, that another worker holds now."""
        if not self.lost:
            return set()
        lost, self.lost = self.lost, set()
        gone = self.store.not_ours(self.run_id, self.ctx.worker, sorted(lost & set(active)))
        self._count("lease_lost", len(gone))
        return gone

    async def heartbeats(self, active: Callable[[], set[str]], tracked: Callable[[], set[str]]) -> None:
        """Renew our leases every third of a lease, whatever the loop awaits (long HTTP calls included)."""
        lease = self.lease.total_seconds()
        while True:
            await self.clock.sleep(self.tuning.lease_check)
            before = active()
            started = self.clock.monotonic()
            try:
                renewed, held = await asyncio.to_thread(self.store.heartbeat, self.run_id, self.ctx.worker,
                                                        self.clock.now(), self.lease)
            except StoreError as exc:
                # No renewal: sends in flight are abandoned before the lease can run out (see send).
                self._count("heartbeat_failed")
                log.warning("worker %s: lease heartbeat failed: %s", self.ctx.worker, exc)
                continue
            still = before & active()
            if still <= renewed:  # (a row our own commit had locked was skipped: wait for the next round)
                self.valid_until = max(self.valid_until, started + lease)
            self.lost |= before - held
            self.orphans = self.orphans or bool(held - tracked())

    async def send(self, call: Awaitable[T]) -> T:
        """A destructive request, abandoned unanswered if our lease might run out before it is answered."""
        if not self.shared:
            return await call
        task = asyncio.ensure_future(call)
        lease = self.lease.total_seconds()
        try:
            while True:
                cutoff = max(self.stamped_at + lease, self.valid_until) - self.tuning.lease_check
                remaining = cutoff - self.clock.monotonic()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if done:
                    return task.result()
            task.cancel()
            await asyncio.wait({task})
        except BaseException:
            task.cancel()
            raise
        if not task.cancelled():
            return task.result()  # answered just in time
        self.doubt = True
        self._count("sends_abandoned")
        raise OutcomeUnknown(f"our lease was not renewed in time: request abandoned after "
                             f"{lease - self.tuning.lease_check:g}s, outcome unknown")

    def release(self) -> None:
        """Let the others take our tasks over now rather than when the leases run out. Not after an abandoned
        request: it may still land, so its task waits out the lease before anyone else reads and acts on it."""
        if self.shared and not self.doubt:
            self.store.release(self.run_id, self.ctx.worker)
