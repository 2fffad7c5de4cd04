"""The reconcile loop: observe, stop, poll, delete — batched, paced, deadline-bound, intent before action.

The loop does the I/O and applies the pure core's decisions (engine/decide.py). Every destructive request is
preceded by a committed intent (the task enters `unsubscribing`, `stopping` or `deleting` and its audit record is
written in the same transaction). A task found in an intent state whose outcome is unknown (a crash, a lost
response) is reconciled by reading its remote status, never blindly re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from orchestrator.clock import Clock
from orchestrator.drs.client import DrsClient
from orchestrator.engine.claims import Leases
from orchestrator.engine.completeness import SHOULD_BE_GONE, EarlyReads, final_check
from orchestrator.engine.decide import Decision, Tracked
from orchestrator.engine.feed import Feed, planned
from orchestrator.engine.polling import Reader
from orchestrator.engine.progress import ProgressBook
from orchestrator.engine.schedule import act, deadlines, leases_step, record_end, sleep, take_feed
from orchestrator.engine.sends import Sender
from orchestrator.engine.tuning import Tuning
from orchestrator.errors import EngineAbort, LeaseLost, StoreError
from orchestrator.lifecycle import (
    TERMINAL,
    Lifecycle,
    Step,
    TaskModel,
    TaskState,
)
from orchestrator.snapshot import Snapshot
from orchestrator.store.repo import Change, Context, Event, Store
from orchestrator.store.schema import Task
from orchestrator.wire import Exchange

ALIVE_CHECK_SECONDS = 2.0  # how often the loop checks its database is still the file at its path


log = logging.getLogger("drs_teardown.engine")


def log_steps(changes: Sequence[Change]) -> None:
    """-v: one line per task step committed (a transition or a task event), with its job id, trigger and reason."""
    if not log.isEnabledFor(logging.INFO):
        return
    for c in changes:
        e = c.event
        if e is None:
            continue
        log.info("%s %s: %s -> %s (%s)", e.trigger, c.job_id, e.from_state, e.to_state, e.detail or "", extra={
            "job_id": c.job_id, "trigger": e.trigger, "from_state": e.from_state, "to_state": e.to_state,
            "remote_status": e.remote_status, "error_code": e.error_code})


def task_row(t: Tracked, event: Event | None = None, **extra: Any) -> Change:
    """The task's row as the loop sees it (and its audit record, if any), for the store to commit."""
    fields = {"state": t.state, "last_status": t.last_status, "last_observed_at": t.observed_at,
              "reason": t.reason, "error_code": t.error_code, "stop_attempts": t.stop_attempts,
              "forced": t.forced, "busy_retries": t.busy_retries, "resends": t.resends,
              "phase_started_at": t.phase_started, "unchanged_polls": t.unchanged_polls, "gtid": t.gtid,
              "incre_start_position": t.incre_start_position, **extra}
    return Change(t.job_id, fields, event)


class Engine:
    """Works the active tasks of one run until none is left, a deadline passes or it is told to stop."""

    def __init__(self, store: Store, client: DrsClient, ctx: Context, tuning: Tuning, clock: Clock, run_id: str,
                 *, fresh: bool = False, shared: bool | None = None,
                 progress: Callable[[Snapshot], None] | None = None,
                 stop_event: asyncio.Event | None = None, rng: random.Random | None = None,
                 bss: Any = None, feed: Feed | None = None) -> None:
        self.store, self.client, self.ctx, self.tuning, self.clock = store, client, ctx, tuning, clock
        self.run_id = run_id
        self.lifecycle = Lifecycle()
        self.fresh = fresh  # the plan's readings stand for the tasks this process just planned
        self.shared = store.is_postgres if shared is None else shared
        self.stop_event = stop_event or asyncio.Event()
        self.feed = feed  # planning still under way adds tasks through it
        self.rng = rng or random.Random()
        self.tasks: dict[str, Tracked] = {}
        self.children: dict[str, set[str]] = {}  # parent job id -> its re-edit children in this run
        self.exchanges: list[Exchange] = []
        self.calls = 0
        self.stats: Counter[str] = Counter()
        self.started = clock.now()
        self.leases = Leases(store, run_id, ctx, tuning, clock, shared=self.shared, stats=self.stats)
        self.book = ProgressBook(clock, tuning, progress)
        self.abort: EngineAbort | None = None
        self.left_behind: list[dict[str, Any]] = []  # what the final check found still present
        self._stop_sent: dict[str, datetime] = {}
        self.book.stop_sent, self.book.children = self._stop_sent, self.children  # the ETA's waits; parents' waits
        self._alive_checked = clock.monotonic()
        self._gen = 0
        self._active_cache: tuple[tuple[int, int], list[Tracked]] | None = None
        self.reader, self.sender, self.early = Reader(self), Sender(self, bss), EarlyReads(self)
        # Every exchange is recorded; the run's deadline bounds every call, retries and Retry-After waits included.
        client.recorder = self._record_exchange
        budget = tuning.timeout
        if client.deadline is not None:  # the command's budget, already running (planning spent some of it)
            budget = min(budget, max(0.0, client.deadline - clock.monotonic()))
        self.deadline = self.started + timedelta(seconds=budget)
        client.deadline = clock.monotonic() + budget
        if bss is not None:
            bss.recorder = self._record_exchange
            bss.budget.deadline = client.deadline

    @property
    def lease_doubt(self) -> bool:
        return self.leases.doubt

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def _record_exchange(self, ex: Exchange) -> None:
        self.calls += 1
        self.exchanges.append(ex)

    def active(self) -> list[Tracked]:
        key = (self._gen, len(self.tasks))
        if self._active_cache is None or self._active_cache[0] != key:
            self._active_cache = (key, [t for t in self.tasks.values() if t.state not in TERMINAL])
        return self._active_cache[1]

    def apply(self, t: Tracked, d: Decision) -> Change | None:
        """Apply one decision to its task: new field values, the trigger fired, the row and audit record built."""
        for key, value in d.updates.items():
            if key == "last_status":
                t.model.last_status = value
            elif key == "order_id":
                t.model.order_id = t.order_id = value
            else:
                setattr(t, key, value)
        if d.abort and self.abort is None:
            self.abort = EngineAbort(d.abort)
            self.stop_event.set()
        now = self.clock.now()
        event: Event | None = None
        rids = (d.request_id,) if d.request_id else ()
        if d.trigger is not None:
            step = self.lifecycle.fire(t.model, d.trigger)
            self._gen += 1
            t.since = now
            t.reason = d.reason if d.reason is not None else t.reason
            t.error_code = d.error_code if d.error_code is not None else t.error_code
            event = Event.of(step, error_code=d.error_code, request_ids=rids, detail=d.reason, values=d.values)
            if step.dest is TaskState.DELETABLE and t.job_id in self._stop_sent:
                self.book.stopped_to_released(self._stop_sent.pop(t.job_id), now)
            elif step.dest in SHOULD_BE_GONE:
                self.early.removed_now(t.job_id, now)  # read once more during the run, not all at the end
        elif d.event is not None:
            event = Event(trigger=d.event, job_id=t.job_id, from_state=t.state.value, to_state=t.state.value,
                          remote_status=t.last_status, error_code=d.error_code, request_ids=rids, detail=d.reason,
                          values=d.values)
        elif not d.persist:
            return None
        return self.row(t, event)

    row = staticmethod(task_row)

    def record_step(self, t: Tracked, step: Step, reason: str) -> Change:
        """A transition already fired (the guarded delete): its row and audit record."""
        self._gen += 1
        t.since, t.reason = self.clock.now(), reason
        return self.row(t, Event.of(step, detail=reason))

    def invalidate(self) -> None:
        """The set of active tasks changed outside a transition (a task dropped or adopted)."""
        self._gen += 1

    def stop_sent(self, t: Tracked) -> None:
        self._stop_sent.setdefault(t.job_id, self.clock.now())

    def commit(self, changes: Sequence[Change | None]) -> None:
        rows = [c for c in changes if c is not None]
        if not rows and not self.exchanges:
            return
        exchanges, self.exchanges = self.exchanges, []
        started = self.clock.monotonic()
        try:
            # Shared: the same statement checks each task is still ours and extends its lease, so a committed
            # intent leaves a full lease for the request that follows it.
            self.store.apply(self.run_id, self.ctx, rows, exchanges, self.clock.now(),
                             check_lease=self.shared, lease=self.leases.lease if self.shared else None)
        except LeaseLost:
            # Another worker holds one of these tasks now. Nothing was committed and our models ran ahead of
            # the store: keep the exchanges (they happened), rebuild from what we still hold, and let the
            # caller abandon its step (no request goes out for an intent that was not committed).
            self.stats["lease_lost"] += 1
            self.store.record_exchanges(self.run_id, self.ctx.worker, exchanges)
            self.tasks = {j: t for j, t in self.tasks.items() if t.state in TERMINAL}
            self.adopt(self.leases.held(), fresh=False)
            raise
        self.leases.committed(started)
        log_steps(rows)
        self.report()

    def report(self, *, force: bool = False) -> None:
        self.book.planning = self.feed is not None and not self.feed.done  # more tasks may still come
        counts = None
        if self.shared and self.book.report is not None:
            if not force and self.clock.monotonic() - self.book._reported_at < 1.0:
                return
            counts = self.store.state_counts(self.run_id)  # other workers move tasks too
        self.book.emit(self.tasks.values(), calls=self.calls, client_stats=self.client.stats, counts=counts,
                       force=force)

    def adopt(self, rows: Iterable[Task], *, fresh: bool) -> int:
        now, added = self.clock.now(), 0
        for r in rows:
            if r.job_id in self.tasks and self.tasks[r.job_id].state not in TERMINAL:
                continue
            # As planned and untouched since (no stop tried, the plan's status still the last one seen).
            untouched = fresh and r.state is TaskState.PENDING and r.stop_attempts == 0 \
                and r.last_status == r.plan_status
            self.tasks[r.job_id] = Tracked(
                model=TaskModel(r.job_id, r.state, r.last_status, r.order_id), planned_action=r.planned_action,
                phase_started=r.phase_started_at or now, next_check=now,
                observe=not (untouched and r.planned_action in ("stop_then_delete", "delete")),
                stop_attempts=r.stop_attempts, forced=r.forced, busy_retries=r.busy_retries, resends=r.resends,
                unchanged_polls=r.unchanged_polls, reason=r.reason, error_code=r.error_code,
                observed_at=r.last_observed_at if untouched else None, order_id=r.order_id,
                parent_job_id=r.parent_job_id, target=r.target, gtid=r.gtid,
                incre_start_position=r.incre_start_position, breakpoint_read=bool(r.gtid or r.incre_start_position))
            if r.parent_job_id and r.planned_action != "skip":
                self.children.setdefault(r.parent_job_id, set()).add(r.job_id)
            self._gen += 1
            added += 1
        if not self.book.settled_elsewhere and not self.shared:
            # Tasks already settled when we joined still count: one aggregate query, not a load of every row.
            self.book.settled_elsewhere = Counter(self.store.state_counts(self.run_id)) - Counter(
                t.state.value for t in self.tasks.values())
        return added

    # -- the run ----------------------------------------------------------------------------------------------------

    async def run(self, *, wait_for_all: bool = True) -> None:
        """Work the run until done, interrupted or aborted, then record how it ended; raises EngineAbort.

        wait_for_all (shared runs): other workers may still hold tasks; wait (bounded by the run deadline) and
        take over any whose lease expires."""
        try:
            await self.work()
            while wait_for_all and self.shared and not self.stop_event.is_set() \
                    and self.store.active_count(self.run_id) and self.clock.now() < self.deadline:
                await self.clock.sleep(min(self.tuning.lease_check, self.tuning.poll_interval))
                await self.work()
            if not self.stop_event.is_set() and planned(self.feed) and not self.store.active_count(self.run_id):
                self.left_behind = await final_check(self)
        except StoreError:
            with contextlib.suppress(Exception):  # mark it interrupted if the store still can; else the next command
                self.store.interrupt_run(self.run_id, self.ctx, self.clock.now(), "the store failed mid-run")
            raise
        except BaseException:  # EngineAbort, a signal's cancellation, anything unexpected: resumable
            record_end(self, interrupted=True)
            raise
        else:
            record_end(self, interrupted=self.stop_event.is_set() or self.abort is not None or not planned(self.feed))
        if self.abort is not None:
            raise self.abort

    async def work(self) -> None:
        """Run until this worker has nothing left (or is stopped); raises EngineAbort on a fatal error."""
        if self.shared:
            self.store.register_worker(self.ctx.worker, socket.gethostname(), os.getpid(), self.clock.now())
        self.adopt(self.leases.claim(), fresh=self.fresh)
        self.fresh = self.fresh and self.leases.claim_more
        self.report(force=True)
        beats = asyncio.ensure_future(self.leases.heartbeats(
            lambda: {t.job_id for t in self.active()}, lambda: set(self.tasks))) if self.shared else None
        try:
            await self._loop()
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
        if self.abort is not None:
            raise self.abort

    async def _loop(self) -> None:
        while not self.stop_event.is_set():
            take_feed(self)
            if self.stop_event.is_set():
                break
            if self.clock.monotonic() - self._alive_checked >= ALIVE_CHECK_SECONDS:
                # The store notices being lost (deleted, replaced): stop sending, exit 4 naming the file.
                self._alive_checked = self.clock.monotonic()
                self.store.check_alive()
            try:
                if self.shared:
                    leases_step(self)
                deadlines(self, self.clock.now())
                now = self.clock.now()
                due = [t for t in self.active() if t.observe and t.next_check <= now]
                if due:
                    await self.reader.observe(due)
                if self.stop_event.is_set():
                    break
                await act(self)
                self.early.tick()
            except LeaseLost:
                continue
            if not self.active():
                if self.shared and self.adopt(self.leases.claim(), fresh=False):
                    continue
                if self.feed is not None and self.feed.waiting:
                    if not self.feed.arrived.is_set():
                        await sleep(self)  # planning may still add tasks (sleep wakes when it does)
                    continue
                return
            await sleep(self)
