"""The lease protocol of shared runs (PostgreSQL): claim in batches, renew by heartbeat, never send past a lease.

Every task a worker holds is its own until at least `valid_until` (monotonic). Another worker takes a task over
only once its lease has expired; a destructive request of ours is abandoned a third of a lease before that can
happen, so a request of ours is only ever in flight while the task is still ours. The one lease rule: renew,
re-claim and check every third of a lease (`Tuning.lease_check`).

Fair sharing: a worker holds at most its share of the run's unfinished tasks, `fair_share` (the unfinished
count over the live workers on the run, never below MIN_SHARE). Claims stop at the share; each heartbeat counts
again, and a worker over its share hands back what the workers short of theirs can take (`hand_back_count`) at
the loop's next step (`take_lost`), never a task with a request in flight (`sending`) nor one in an intent state
(its outcome is not in). A worker that joins therefore gets work within one heartbeat of the others. Tasks of
targets a worker already holds are claimed first, then those of targets nobody holds, and tasks are handed back
from the targets it holds the fewest of: each worker tends to work whole targets (one region's pacing budget,
one token).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TypeVar

from orchestrator.clock import Clock
from orchestrator.engine.tuning import Tuning
from orchestrator.errors import OutcomeUnknown, StoreError
from orchestrator.store.leases import HeldTask, ShareView
from orchestrator.store.repo import Context, Store
from orchestrator.store.schema import Task

T = TypeVar("T")
log = logging.getLogger("drs_teardown.engine")

# A share is never smaller than this. Moving a task costs: its taker reads it afresh before acting, and the move
# is a record in the trail. Near a run's end (fewer than MIN_SHARE tasks per worker left) a move saves less than
# that, and a floor keeps the tail from shuffling a handful of tasks between workers at every heartbeat as the
# count falls. Ten is one batch-detail call's worth of ids (DETAIL_CHUNK), well under a claim (claim_size 100).
MIN_SHARE = 10


def fair_share(unfinished: int, workers: int, minimum: int = MIN_SHARE) -> int:
    """How many of a run's unfinished tasks one of its live workers may hold."""
    return max(minimum, -(-unfinished // max(1, workers)))


def claim_limit(claim_size: int, share: int, held: int) -> int:
    """How many tasks a claim may take: a batch at most, and never past the share."""
    return max(0, min(claim_size, share - held))


def claim_preference(mine: Iterable[str | None],
                     others: Iterable[str | None]) -> tuple[set[str | None], set[str | None]]:
    """(targets to claim first, targets to claim last): ours first, then targets no live worker holds, then the
    rest (targets only others hold)."""
    first = set(mine)
    last = set(others) - first
    if all(t is None for t in first | last):
        return set(), set()  # one target (or none named): task order alone
    return first, last


def hand_back_count(share: int, held: int, others: Iterable[int], free: int, minimum: int = MIN_SHARE) -> int:
    """How many tasks a worker holding `held` should hand back: no more than it holds over its share, and no more
    than the workers short of their share (`others`: what each other live worker holds) can take beyond the
    `free` tasks they may claim anyway. Only workers short by `minimum` or more count (a joiner always is):
    moving a handful of tasks between workers that all have about their share helps nobody."""
    excess = held - share
    if excess <= 0:
        return 0
    hungry = sum(share - n for n in others if share - n >= minimum)
    return max(0, min(excess, hungry - free))


def hand_back_choice(held: Sequence[HeldTask], excess: int, keep: Collection[str] = ()) -> list[str]:
    """Which `excess` of the tasks we hold at rest to give back: never one in `keep` (a request in flight) nor
    one of a family (a parent or a re-edit child: the parent waits on its children where they are worked);
    from the targets we hold the fewest of first, so whole targets go back and the ones we keep stay whole;
    within a target, the last claimed first."""
    if excess <= 0:
        return []
    by_target: dict[str | None, list[str]] = {}
    for t in held:
        by_target.setdefault(t.target, [])
    sizes = Counter(t.target for t in held)
    for t in held:
        if t.job_id not in keep and not t.family:
            by_target[t.target].append(t.job_id)
    out: list[str] = []
    for target in sorted(by_target, key=lambda k: (sizes[k], k is not None, k or "")):
        for job_id in reversed(by_target[target]):
            if len(out) >= excess:
                return out
            out.append(job_id)
    return out


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
        self.share: int | None = None  # our fair share of the run's unfinished tasks, as last counted
        self.excess = 0  # tasks over our share, counted at the last heartbeat: handed back at the next step
        self.excess_note = ""
        self.in_flight: set[str] = set()  # job ids with an intent committed and its answer not yet in (sends.py)

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def claim(self) -> list[Task]:
        """Take more tasks: all of them on SQLite; on a shared database one batch at a time, up to our share."""
        now, started = self.clock.now(), self.clock.monotonic()
        if not self.shared:
            rows = self.store.claim(self.run_id, self.ctx.worker, now, self.lease, None, ignore_leases=True)
            more = False
        else:
            view = self.store.share_view(self.run_id, self.ctx.worker, now, self.lease)
            self._counted(view)
            limit = claim_limit(self.tuning.claim_size, self.share or 0, view.held)
            rows = self.store.claim(self.run_id, self.ctx.worker, now, self.lease, limit, ctx=self.ctx,
                                    prefer=claim_preference(view.mine, view.others)) if limit else []
            more = bool(limit) and len(rows) >= limit and view.held + len(rows) < (self.share or 0)
        if not self.valid_until:
            self.valid_until = started + self.lease.total_seconds()
        self.last_claim = started
        self.claim_more = more
        return rows

    def _counted(self, view: ShareView) -> None:
        self.share = fair_share(view.unfinished, view.workers)
        self.excess = hand_back_count(self.share, view.held,
                                      [n for w, n in view.loads.items() if w != view.worker], view.free)
        self.excess_note = (f"fair share {self.share} of {view.unfinished} unfinished task(s) over "
                            f"{view.workers} live worker(s); {view.held} held")

    @contextmanager
    def sending(self, job_ids: Iterable[str]) -> Iterator[None]:
        """Around an intent's commit, its request and its answer's commit: these tasks are never handed back."""
        ids = set(job_ids) - self.in_flight
        self.in_flight |= ids
        try:
            yield
        finally:
            self.in_flight -= ids

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
        """The job ids, among `active`, that are no longer ours: another worker holds them now, or we handed them
        back for being over our share (the loop stops tracking both)."""
        given = self._hand_back(active) if self.excess else set()
        if not self.lost:
            return given
        lost, self.lost = self.lost - given, set()
        gone = self.store.not_ours(self.run_id, self.ctx.worker, sorted(lost & set(active)))
        self._count("lease_lost", len(gone))
        return gone | given

    def _hand_back(self, active: Sequence[str]) -> set[str]:
        excess, self.excess = self.excess, 0  # once per count: what could not go back waits for the next one
        tracked, keep = set(active), set(self.in_flight)

        def choose(held: list[HeldTask]) -> list[str]:
            return hand_back_choice([t for t in held if t.job_id in tracked], excess, keep)

        try:
            given = self.store.hand_back(self.run_id, self.ctx, choose, self.clock.now(),
                                         f"handed back: over our {self.excess_note}")
        except StoreError as exc:
            log.warning("worker %s: hand-back failed: %s", self.ctx.worker, exc)
            return set()
        self._count("handed_back", len(given))
        if given:
            log.info("worker %s: handed back %d task(s) (%s)", self.ctx.worker, len(given), self.excess_note)
        return given

    async def heartbeats(self, active: Callable[[], set[str]], tracked: Callable[[], set[str]]) -> None:
        """Renew our leases every third of a lease, whatever the loop awaits (long HTTP calls included)."""
        lease = self.lease.total_seconds()
        while True:
            await self.clock.sleep(self.tuning.lease_check)
            before = active()
            started = self.clock.monotonic()
            try:
                renewed, held, view = await asyncio.to_thread(self._beat, self.clock.now())
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
            if view is not None:
                self._counted(view)

    def _beat(self, now: datetime) -> tuple[set[str], set[str], ShareView | None]:
        """One heartbeat (in a thread): renew our leases, then count our share again."""
        renewed, held = self.store.heartbeat(self.run_id, self.ctx.worker, now, self.lease)
        try:
            view = self.store.share_view(self.run_id, self.ctx.worker, now, self.lease)
        except StoreError as exc:  # the renewal went through; the count waits for the next heartbeat
            log.warning("worker %s: counting the share failed: %s", self.ctx.worker, exc)
            view = None
        return renewed, held, view

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
