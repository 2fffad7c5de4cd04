"""The reconcile loop: observe, stop, poll, delete — batched, paced, deadline-bound, intent before action.

Every destructive request is preceded by a committed intent (the task enters `stopping` or `deleting` and its
audit record is written in the same transaction). A task found in an intent state whose outcome is unknown
(a crash, a lost response) is reconciled by reading its remote status, and re-sent at most once per unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from orchestrator import faultpoints
from orchestrator.clock import Clock
from orchestrator.drs.client import DrsClient, fault_class
from orchestrator.drs.codes import NOT_FOUND_CODES, RELEASE_FAILED, ErrorClass, StatusClass, classify, classify_code
from orchestrator.drs.models import ActionItem, StatusItem
from orchestrator.errors import (
    AuthFailure,
    DrsError,
    EngineAbort,
    GuardRefused,
    InvalidTransition,
    LeaseLost,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    StoreError,
    Throttled,
    TransportFailure,
)
from orchestrator.lifecycle import OUTCOMES, TERMINAL, Lifecycle, Step, TaskModel, exit_code_for, outcome_of
from orchestrator.lifecycle import TaskState as S
from orchestrator.planning import Action, Plan
from orchestrator.store.models import Run, Task
from orchestrator.store.repo import Change, Context, Event, Store
from orchestrator.version import __version__
from orchestrator.wire import DeletePermit, Exchange, StopRequest

MAX_RESENDS = 6  # unknown outcomes in a row a task may be re-sent for (after reading it) before it is failed
MAX_REJECTIONS = 3  # DRS.M00304-style refusals before a task is failed
# Advanced overrides of the lease defaults, read once (tests use short leases and small claims); --lease-seconds
# and --claim-size, where given, win.
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_CLAIM_SIZE = 100
T = TypeVar("T")
log = logging.getLogger("drs_teardown.engine")



@dataclass(frozen=True)
class Tuning:
    """The knobs of a run; every wait has a deadline."""

    batch_size: int = 100
    poll_interval: float = 5.0
    max_poll_interval: float = 60.0
    stop_timeout: float = 1800.0
    delete_timeout: float = 600.0
    timeout: float = 6 * 3600.0
    force: bool = False
    no_force: bool = False
    breakpoint: bool = False
    terminate_attempts: int = 2  # plain terminates before escalating to force_terminate
    lease_seconds: float = DEFAULT_LEASE_SECONDS  # a dead worker's tasks are taken over after this
    claim_size: int = DEFAULT_CLAIM_SIZE  # tasks a worker claims at a time on a shared database (keeps claiming)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def actor_info(credential: str | None) -> dict[str, Any]:
    """Who acts: OS user, host, tool version, credential identity (never the secret)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"os_user": user, "host": socket.gethostname(), "tool": f"drs-teardown {__version__}",
            "credential": credential or "none"}


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Work:
    """A task as the loop sees it: the lifecycle model plus scheduling."""

    model: TaskModel
    planned_action: str
    phase_started: datetime
    next_check: datetime
    observe: bool = True  # the next step is reading its status
    stop_attempts: int = 0
    forced: bool = False
    busy_retries: int = 0
    rejections: int = 0
    resends: int = 0
    unchanged_polls: int = 0
    reason: str | None = None
    error_code: str | None = None
    since: datetime | None = None  # when the last transition happened: the oldest waiters are polled first
    # In the delete phase since phase_started: a busy delete sends it back through `pending` without restarting
    # the phase, so a task the service keeps refusing still meets its delete timeout.
    delete_phase: bool = False

    def __post_init__(self) -> None:
        self.delete_phase = self.delete_phase or self.model.state in (S.DELETABLE, S.DELETING)

    def enter_delete_phase(self, now: datetime) -> None:
        if not self.delete_phase:
            self.delete_phase, self.phase_started = True, now

    @property
    def job_id(self) -> str:
        return self.model.job_id

    @property
    def state(self) -> S:
        return self.model.state


@dataclass
class Snapshot:
    """Progress, for the renderer."""

    counts: Counter[str]
    waiting: Counter[str]
    total: int
    started: datetime
    now: datetime
    calls: int


def start_run(store: Store, plan: Plan, ctx: Context, tuning: Tuning, now: datetime, *, consent: str,
              plan_hash: str | None = None, selection: dict[str, Any] | None = None) -> str:
    """Record a run, its tasks (pending / skipped / blocked per the plan) and their first records."""
    run_id = uuid.uuid4().hex
    lifecycle = Lifecycle()
    run = Run(id=run_id, created_at=now, finished_at=None, status="running", project_id=plan.project_id,
              endpoint=plan.endpoint, selection=selection or plan.selection.to_dict(), options=tuning.to_dict(),
              actor=ctx.actor, ticket=ctx.ticket, reason=ctx.reason, consent=consent, plan_hash=plan_hash,
              exit_code=None, deadline_at=now + timedelta(seconds=tuning.timeout), head_hash="")
    tasks: list[dict[str, Any]] = []
    events: list[Event] = [Event(trigger="run_started", detail=f"consent={consent}; plan={plan.hash}; "
                                 f"targets={len(plan.items)}; counts={plan.counts()}")]
    for item in plan.items:
        model = TaskModel(item.job_id, last_status=item.status)
        events.append(Event(trigger="plan", job_id=item.job_id, to_state=S.PENDING.value,
                            remote_status=item.status, detail=f"{item.action.value}: {item.reason}"))
        if item.action is Action.SKIP:
            events.append(Event.of(lifecycle.fire(model, "skip"), detail=item.reason))
        elif item.action is Action.BLOCK:
            events.append(Event.of(lifecycle.fire(model, "block"), detail=item.reason))
        tasks.append({"run_id": run_id, "job_id": item.job_id, "name": item.name, "db_use_type": item.db_use_type,
                      "engine_type": item.engine_type, "parent_job_id": item.parent_job_id,
                      "order_id": item.order_id, "planned_action": item.action.value, "plan_status": item.status,
                      "state": model.state, "last_status": item.status, "last_observed_at": now,
                      "reason": item.reason if model.state in TERMINAL else None, "error_code": None,
                      "stop_attempts": 0, "forced": False, "busy_retries": 0, "resends": 0,
                      "phase_started_at": now, "next_check_at": now, "unchanged_polls": 0, "lease_owner": None,
                      "lease_expires_at": None, "updated_at": now})
    store.create_run(run, tasks, ctx, events, now)
    return run_id


class Engine:
    """Works the active tasks of one run until none is left, a deadline passes or it is told to stop."""

    def __init__(self, store: Store, client: DrsClient, ctx: Context, tuning: Tuning, clock: Clock, run_id: str,
                 *, fresh: bool = False, shared: bool | None = None,
                 progress: Callable[[Snapshot], None] | None = None,
                 stop_event: asyncio.Event | None = None) -> None:
        self.store, self.client, self.ctx, self.tuning, self.clock = store, client, ctx, tuning, clock
        self.run_id = run_id
        self.lifecycle = Lifecycle()
        self.fresh = fresh
        self.shared = store.is_postgres if shared is None else shared
        self.progress = progress
        self.stop_event = stop_event or asyncio.Event()
        self.work_items: dict[str, Work] = {}
        self.exchanges: list[Exchange] = []
        self.calls = 0
        self.stats: Counter[str] = Counter()
        self.started = clock.now()
        # Leases (shared runs): monotonic times; every held task is ours until at least _valid_until.
        self._lease = timedelta(seconds=tuning.lease_seconds)
        self._valid_until = 0.0
        self._stamped_at = 0.0  # the last commit that re-checked and extended the leases it touched
        self._last_claim = -1e18
        self._claim_more = True
        self._lost: set[str] = set()
        self._orphans = False
        self._reported_at = -1e18
        self.lease_doubt = False  # a send was abandoned: let the leases run out, do not release them
        self._total = 0
        # _active() is asked for many times per loop; recompute it only after a transition or a (de)claim.
        self._gen = 0
        self._active_cache: tuple[tuple[int, int], list[Work]] | None = None
        self._stop_td = timedelta(seconds=tuning.stop_timeout)
        self._delete_td = timedelta(seconds=tuning.delete_timeout)
        self.abort: EngineAbort | None = None
        self._others: Counter[str] = Counter()
        client.recorder = self._record_exchange

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _record_exchange(self, ex: Exchange) -> None:
        self.calls += 1
        self.exchanges.append(ex)

    def _commit(self, changes: Sequence[Change]) -> None:
        exchanges, self.exchanges = self.exchanges, []
        started = self.clock.monotonic()
        try:
            # Shared: the same statement checks each task is still ours and extends its lease, so a committed
            # intent leaves a full lease for the request that follows it.
            self.store.apply(self.run_id, self.ctx, changes, exchanges, self.clock.now(),
                             check_lease=self.shared, lease=self._lease if self.shared else None)
        except LeaseLost:
            # Another worker holds one of these tasks now. Nothing was committed and our models ran ahead of
            # the store: keep the exchanges (they happened), rebuild from what we still hold, and let the
            # caller abandon its step (no request goes out for an intent that was not committed).
            self.stats["lease_lost"] += 1
            self.store.record_exchanges(self.run_id, self.ctx.worker, exchanges)
            self._resync()
            raise
        if self.shared:
            self._stamped_at = started
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        if self.shared:
            self._report_shared()
            return
        counts: Counter[str] = Counter(self._others)
        waiting: Counter[str] = Counter()
        for w in self.work_items.values():
            counts[w.state.value] += 1
            if w.state not in TERMINAL and w.model.last_status:
                waiting[w.model.last_status] += 1
        self.progress(Snapshot(counts, waiting, self._total, self.started, self.clock.now(), self.calls))

    def _report_shared(self) -> None:
        # Other workers move tasks too: the counts come from the store, at most once a second.
        assert self.progress is not None
        mono = self.clock.monotonic()
        if mono - self._reported_at < 1.0:
            return
        self._reported_at = mono
        counts: Counter[str] = Counter(self.store.state_counts(self.run_id))
        waiting: Counter[str] = Counter(w.model.last_status for w in self._active() if w.model.last_status)
        total = sum(counts.values())
        self.progress(Snapshot(counts, waiting, total, self.started, self.clock.now(), self.calls))

    def _claim(self) -> int:
        """Take more tasks: all of them on SQLite; one batch at a time on a shared database."""
        now, started = self.clock.now(), self.clock.monotonic()
        limit = self.tuning.claim_size if self.shared else None
        rows = self.store.claim(self.run_id, self.ctx.worker, now, self._lease, limit,
                                ignore_leases=not self.shared, ctx=self.ctx if self.shared else None)
        first = not self._valid_until
        self._last_claim = started
        self._claim_more = limit is not None and len(rows) >= limit
        if first:
            self._valid_until = started + self._lease.total_seconds()
        added = self._adopt(rows, fresh=self.fresh)
        # The plan's observation stands for the tasks this process planned, while it sweeps them up; tasks it
        # claims later (left by others, taken over) are observed first.
        self.fresh = self.fresh and self._claim_more
        return added

    def _resync(self) -> None:
        """Rebuild the work from the store: every active task we still hold, observed before anything else."""
        started = self.clock.monotonic()
        rows = self.store.held(self.run_id, self.ctx.worker, self.clock.now(), self._lease)
        self._valid_until = started + self._lease.total_seconds()
        self.work_items = {j: w for j, w in self.work_items.items() if w.state in TERMINAL}
        self._lost.clear()
        self._adopt(rows, fresh=False)

    def _adopt(self, rows: Sequence[Task], *, fresh: bool) -> int:
        now = self.clock.now()
        added = 0
        for t in rows:
            if t.job_id in self.work_items and self.work_items[t.job_id].state not in TERMINAL:
                continue
            # As planned and untouched since (no stop tried, the plan's status still the last one seen).
            untouched = (fresh and t.state is S.PENDING and t.stop_attempts == 0
                         and t.last_status == t.plan_status)
            fresh_stop = untouched and t.planned_action == Action.STOP_THEN_DELETE.value
            fresh_delete = untouched and t.planned_action == Action.DELETE.value
            w = Work(model=TaskModel(t.job_id, t.state, t.last_status), planned_action=t.planned_action,
                     phase_started=t.phase_started_at or now, next_check=now,
                     observe=not (fresh_stop or fresh_delete),
                     stop_attempts=t.stop_attempts, forced=t.forced, busy_retries=t.busy_retries,
                     resends=t.resends, unchanged_polls=t.unchanged_polls, reason=t.reason, error_code=t.error_code)
            self.work_items[t.job_id] = w
            self._gen += 1
            added += 1
        if not self._others and not self.shared:  # (shared runs report counts from the store)
            # Tasks already settled when we joined (skipped/blocked at plan, or done before a resume) still count.
            # One aggregate query, not a load of every task row.
            self._others = Counter(self.store.state_counts(self.run_id)) - Counter(
                w.state.value for w in self.work_items.values())
        self._total = max(self._total, len(self.work_items) + sum(self._others.values()))
        return added

    def _change(self, w: Work, trigger: str | None = None, *, detail: str | None = None,
                error_code: str | None = None, request_id: str | None = None, step: Step | None = None,
                **fields: Any) -> Change:
        """Fire `trigger` (if any; or take an already fired `step`) and build the row update and audit event."""
        values: dict[str, Any] = dict(fields)
        event = None
        if trigger is not None and step is None:
            step = self.lifecycle.fire(w.model, trigger)
        if step is not None:
            self._gen += 1
            w.since = self.clock.now()
            if detail is not None:
                w.reason = detail
            if error_code is not None:
                w.error_code = error_code
            event = Event.of(step, error_code=error_code, request_ids=(request_id,) if request_id else (),
                             detail=detail)
            values.setdefault("reason", w.reason)
            values.setdefault("error_code", w.error_code)
        values.update(state=w.model.state, last_status=w.model.last_status, stop_attempts=w.stop_attempts,
                      busy_retries=w.busy_retries, resends=w.resends, phase_started_at=w.phase_started)
        return Change(w.job_id, values, event)

    def _active(self) -> list[Work]:
        key = (self._gen, len(self.work_items))
        if self._active_cache is None or self._active_cache[0] != key:
            self._active_cache = (key, [w for w in self.work_items.values() if w.state not in TERMINAL])
        return self._active_cache[1]

    def _interval(self, w: Work) -> float:
        return min(self.tuning.max_poll_interval, self.tuning.poll_interval * (1.5 ** w.unchanged_polls))

    def _backoff(self, attempts: int) -> float:
        cap = min(self.tuning.max_poll_interval, self.tuning.poll_interval * (2 ** min(attempts, 10)))
        return random.uniform(cap / 2, cap)

    # -- the loop -----------------------------------------------------------------------------------------------

    async def run(self, *, wait_for_all: bool = True) -> None:
        """Work the run until done, interrupted or aborted, then record how it ended; raises EngineAbort.

        wait_for_all (shared runs): other workers may still hold tasks; wait (bounded by the run deadline) and
        take over any whose lease expires."""
        aborted: EngineAbort | None = None
        try:
            await self.work()
            while wait_for_all and self.shared and not self.stop_event.is_set() \
                    and self.store.active_count(self.run_id):
                if self.clock.now() >= self._run_deadline():
                    break
                await self.clock.sleep(min(self.tuning.lease_seconds / 3, self.tuning.poll_interval))
                await self.work()
        except EngineAbort as exc:
            aborted = exc
        finally:
            self._record_end(interrupted=self.stop_event.is_set() or aborted is not None)
        if aborted is not None:
            raise aborted

    def _record_end(self, *, interrupted: bool) -> None:
        store, run_id, now = self.store, self.run_id, self.clock.now()
        if self.exchanges:
            store.record_exchanges(run_id, self.ctx.worker, self.exchanges)
            self.exchanges = []
        if self.shared and not self.lease_doubt:
            # Let the others take our tasks over now rather than when the leases run out. Not after an abandoned
            # request: it may still land, so its task waits out the lease before anyone else reads and acts on it.
            store.release(run_id, self.ctx.worker)
        active = store.active_count(run_id)
        if active == 0:
            counts = Counter(outcome_of(t.state) for t in store.tasks(run_id))
            code = exit_code_for(counts)
            ordered = {k: counts[k] for k in OUTCOMES if counts[k]}
            # With several workers the first to see the run done records it, once (under the run row's lock).
            store.finish_run(run_id, self.ctx, Event(trigger="run_finished", outcome=str(code),
                                                     detail=f"counts={ordered}"), now, code)
        elif interrupted and (not self.shared or store.claimable_count(run_id, now) == active):
            # (Shared: only when no other live worker is still on the run.)
            store.set_run(run_id, status="interrupted")
            store.append_events(run_id, self.ctx, [Event(trigger="run_interrupted", detail=(
                f"{active} task(s) pending; resumable with `drs-teardown resume`"))], now)

    async def work(self) -> None:
        """Run until this worker has nothing left (or is stopped); raises EngineAbort on a fatal error."""
        await self._work()
        if self.abort is not None:
            raise self.abort

    async def _work(self) -> None:
        if self.shared:
            self.store.register_worker(self.ctx.worker, socket.gethostname(), os.getpid(), self.clock.now())
        self._claim()
        self._report()
        beats = asyncio.ensure_future(self._heartbeats()) if self.shared else None
        try:
            await self._loop()
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats

    async def _loop(self) -> None:
        while not self.stop_event.is_set():
            now = self.clock.now()
            try:
                if self.shared:
                    self._leases_step()
                self._enforce_deadlines(now)
                due = [w for w in self._active() if w.observe and w.next_check <= now]
                if due:
                    await self._observe(due)
                if self.stop_event.is_set():
                    break
                stops = [w for w in self._active() if not w.observe and w.next_check <= self.clock.now()
                         and (w.state is S.STOPPING or self.lifecycle.may(w.model, "stop"))]
                if stops:
                    await self._stop(stops)
                if self.stop_event.is_set():
                    break
                ready = [w for w in self._active() if not w.observe and w.state is S.PENDING
                         and self.lifecycle.may(w.model, "released")]
                if ready:
                    now = self.clock.now()
                    for w in ready:
                        w.enter_delete_phase(now)
                    self._commit([self._change(w, "released", detail=f"{w.model.last_status} observed at plan")
                                  for w in ready])
                deletes = [w for w in self._active() if not w.observe and w.state in (S.DELETABLE, S.DELETING)]
                if deletes:
                    await self._delete(deletes)
            except LeaseLost:
                continue
            if not self._active():
                if self.shared and self._claim():
                    continue
                return
            await self._sleep()

    # -- leases (shared runs) -------------------------------------------------------------------------------

    def _leases_step(self) -> None:
        """Between steps: let go of tasks another worker took, pick up strays, and claim another batch."""
        if self._lost:
            lost, self._lost = self._lost, set()
            for job_id in self.store.not_ours(self.run_id, self.ctx.worker, sorted(lost)):
                w = self.work_items.get(job_id)
                if w is not None and w.state not in TERMINAL:
                    del self.work_items[job_id]
                    self._gen += 1
                    self.stats["lease_lost"] += 1
        if self._orphans:
            self._orphans = False
            held = self.store.held(self.run_id, self.ctx.worker, self.clock.now(), self._lease)
            self._adopt(held, fresh=False)
        if self._claim_more or self.clock.monotonic() - self._last_claim >= self.tuning.lease_seconds / 3:
            self._claim()

    async def _heartbeats(self) -> None:
        """Renew our leases every third of a lease, whatever the loop awaits (long HTTP calls included)."""
        lease = self._lease.total_seconds()
        while True:
            await self.clock.sleep(lease / 3)
            before = {j for j, w in self.work_items.items() if w.state not in TERMINAL}
            started = self.clock.monotonic()
            try:
                renewed, held = await asyncio.to_thread(self.store.heartbeat, self.run_id, self.ctx.worker,
                                                        self.clock.now(), self._lease)
            except StoreError as exc:
                # No renewal: sends in flight are abandoned before the lease can run out (see _send).
                self.stats["heartbeat_failed"] += 1
                log.warning("worker %s: lease heartbeat failed: %s", self.ctx.worker, exc)
                continue
            active = {j for j in before if j in self.work_items and self.work_items[j].state not in TERMINAL}
            if active <= renewed:  # (a row our own commit had locked was skipped: wait for the next round)
                self._valid_until = max(self._valid_until, started + lease)
            self._lost |= before - held
            self._orphans = self._orphans or bool(held - self.work_items.keys())

    async def _send(self, call: Awaitable[T]) -> T:
        """A destructive request, abandoned unanswered if our lease might run out before it is answered.

        Another worker takes a task over only once its lease has expired; we stop waiting on a request a third
        of a lease earlier, so a request of ours can only be in flight while the task is still ours.
        """
        if not self.shared:
            return await call
        task = asyncio.ensure_future(call)
        lease = self._lease.total_seconds()
        try:
            while True:
                cutoff = max(self._stamped_at + lease, self._valid_until) - lease / 3
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
        self.lease_doubt = True
        self.stats["sends_abandoned"] += 1
        raise OutcomeUnknown(f"our lease was not renewed in time: request abandoned after "
                             f"{lease * 2 / 3:g}s, outcome unknown")

    async def _sleep(self) -> None:
        now = self.clock.now()
        active = self._active()
        wake = min((w.next_check for w in active), default=now)
        stop_starts = [w.phase_started for w in active if not w.delete_phase]
        delete_starts = [w.phase_started for w in active if w.delete_phase]
        wake = min([wake, self._run_deadline(),
                    *([min(stop_starts) + self._stop_td] if stop_starts else []),
                    *([min(delete_starts) + self._delete_td] if delete_starts else [])])
        delay = max(0.0, min((wake - now).total_seconds(), self.tuning.max_poll_interval))
        if self.shared:
            # Back in time to claim what others' leases leave behind; at once while unclaimed work remains.
            delay = 0.0 if self._claim_more else min(delay, self.tuning.lease_seconds / 3)
        if delay <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        stopper = asyncio.ensure_future(self.stop_event.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in (sleeper, stopper):
            t.cancel()

    def _run_deadline(self) -> datetime:
        return self.started + timedelta(seconds=self.tuning.timeout)

    def _enforce_deadlines(self, now: datetime) -> None:
        changes = []
        # One comparison per task: its phase began before these cut-offs, or the run's deadline passed.
        whole_run = now >= self._run_deadline()
        stop_cut, delete_cut = now - self._stop_td, now - self._delete_td
        for w in list(self._active()):
            if whole_run or w.phase_started <= (delete_cut if w.delete_phase else stop_cut):
                phase = "delete" if w.delete_phase else "stop"
                limit = self.tuning.delete_timeout if phase == "delete" else self.tuning.stop_timeout
                whole = self.started + timedelta(seconds=self.tuning.timeout) <= now
                why = (f"run timeout ({self.tuning.timeout:g}s) passed" if whole
                       else f"{phase}-timeout ({limit:g}s) passed")
                changes.append(self._change(w, "time_out", detail=f"{why}; last status {w.model.last_status}"))
        if changes:
            self._commit(changes)

    # -- observe ------------------------------------------------------------------------------------------------

    async def _observe(self, due: list[Work]) -> None:
        # Never-moved tasks (since None) first; a None cannot be compared with a datetime.
        due.sort(key=lambda w: (w.since is not None, w.since.timestamp() if w.since else 0.0, w.job_id))
        chunk = 100
        first, rest = due[:chunk], due[chunk:]
        changed = await self._observe_chunks([first])
        if rest:
            if changed or any(w.state in (S.STOPPING, S.DELETING, S.PENDING) for w in rest):
                await self._observe_chunks([rest[i : i + chunk] for i in range(0, len(rest), chunk)])
            else:
                # The oldest waiters have not moved: the younger ones will not have either. Skip a round.
                now = self.clock.now()
                for w in rest:
                    w.unchanged_polls += 1
                    w.next_check = now + timedelta(seconds=self._interval(w))
                self.stats["polls_skipped"] += len(rest)

    async def _observe_chunks(self, chunks: list[list[Work]]) -> bool:
        results = await asyncio.gather(*(self._status(c) for c in chunks), return_exceptions=True)
        faultpoints.hit("after_response", "poll")
        changes: list[Change] = []
        any_changed = False
        now = self.clock.now()
        for works, result in zip(chunks, results, strict=True):
            if isinstance(result, AuthFailure):
                self.abort = EngineAbort(f"credentials refused: {result.message}")
                self.stop_event.set()
                continue
            if isinstance(result, MalformedResponse):
                for w in works:
                    changes.append(self._change(w, "block", detail=f"unreadable answer: {result.message}"))
                continue
            if isinstance(result, BaseException):
                if not isinstance(result, DrsError):
                    raise result
                self.stats[f"observe_error:{type(result).__name__}"] += 1
                for w in works:
                    w.next_check = now + timedelta(seconds=self._backoff(w.unchanged_polls + 1))
                continue
            for w in works:
                answer = result.get(w.job_id)
                if answer is None:
                    changes.append(self._change(w, "block", detail="batch-status did not return it"))
                    continue
                before = w.state
                changes.extend(self._apply_status(w, answer[0], answer[1], now))
                # Progress means a local transition, not merely a new remote status (RELEASE_RESOURCE_STARTED
                # right after a stop is expected, not news).
                any_changed = any_changed or w.state is not before
        if any_changed:
            # Progress in this round: the rest of the cohort is likely close behind, so look again soon.
            for works in chunks:
                for w in works:
                    if w.state not in TERMINAL and w.observe and w.unchanged_polls:
                        w.unchanged_polls = 0
                        w.next_check = min(w.next_check, now + timedelta(seconds=self.tuning.poll_interval))
        if changes:
            self._commit(changes)
        return any_changed

    async def _status(self, works: list[Work]) -> dict[str, tuple[StatusItem, str | None]]:
        answers = await self.client.status_chunk([w.job_id for w in works])
        return {k: (a.item, a.request_id) for k, a in answers.items()}

    def _apply_status(self, w: Work, item: StatusItem, request_id: str | None, now: datetime) -> list[Change]:
        """Decide what one observation means; pure bookkeeping, no I/O."""
        previous = w.model.last_status
        if item.error_code in NOT_FOUND_CODES or item.status == "DELETED":
            w.model.last_status = item.status or previous
            if w.state is S.DELETING:
                return [self._change(w, "deleted", detail="read back deleted after our delete",
                                     error_code=item.error_code, request_id=request_id, last_observed_at=now)]
            return [self._change(w, "vanished", detail="gone without a delete from this run",
                                 error_code=item.error_code, request_id=request_id, last_observed_at=now)]
        if item.error_code:
            return [self._change(w, "block", detail=f"status unreadable: {item.error_code} {item.error_message or ''}"
                                 .strip(), error_code=item.error_code, request_id=request_id)]
        w.model.last_status = item.status
        cls = classify(item.status)
        moved = item.status != previous
        w.unchanged_polls = 0 if moved else w.unchanged_polls + 1
        w.next_check = now + timedelta(seconds=self._interval(w))
        if cls is StatusClass.UNKNOWN:
            return [self._change(w, "block", detail=f"unknown status {item.status!r}: not acting on it",
                                 request_id=request_id)]
        state = w.state
        if cls is StatusClass.DELETABLE:
            if state is S.DELETING:
                return self._reconcile_delete(w, request_id)
            w.observe = False
            if state is S.DELETABLE:
                return [self._change(w, last_observed_at=now)]
            w.enter_delete_phase(now)
            return [self._change(w, "released", detail=f"{item.status} observed", request_id=request_id,
                                 last_observed_at=now)]
        if state is S.DELETABLE or state is S.DELETING:
            # It was deletable and is not any more: start over (a new stop phase) from an observation.
            w.delete_phase, w.phase_started = False, now
            return [self._change(w, "requeue", detail=f"status moved to {item.status}", request_id=request_id)]
        if cls is StatusClass.WAIT:
            if state is S.STOPPING:
                return [self._change(w, "stop_accepted", detail=f"{item.status}: the stop is taking effect",
                                     request_id=request_id)]
            return [self._change(w, last_observed_at=now)] if moved else []
        # Stoppable or RELEASE_RESOURCE_FAILED: the next step is a stop.
        if state is S.STOPPING:
            return self._reconcile_stop(w, request_id)
        if cls is StatusClass.RELEASE_FAILED and state is S.RELEASING and not self._may_escalate(w):
            return [self._change(w, "fail", detail=self._no_force_reason(w), request_id=request_id)]
        w.observe = False
        w.next_check = now
        return [self._change(w, last_observed_at=now)] if moved else []

    def _reconcile_stop(self, w: Work, request_id: str | None) -> list[Change]:
        """In `stopping` with an unknown outcome and still stoppable: re-send once."""
        if w.resends >= MAX_RESENDS:
            return [self._change(w, "fail", detail=f"stop outcome unknown {w.resends} times; giving up",
                                 request_id=request_id)]
        # The `resend` intent is recorded when the stop goes out (see _stop).
        w.resends += 1
        w.observe = False
        w.next_check = self.clock.now()
        return [self._change(w, last_observed_at=self.clock.now())]

    def _reconcile_delete(self, w: Work, request_id: str | None) -> list[Change]:
        """In `deleting` with an unknown outcome and still deletable: re-send once (the guard checks again)."""
        if w.resends >= MAX_RESENDS:
            return [self._change(w, "fail", detail=f"delete outcome unknown {w.resends} times; giving up",
                                 request_id=request_id)]
        # The guarded `redelete` intent is recorded when the delete goes out (see _delete).
        w.resends += 1
        w.observe = False
        return [self._change(w, last_observed_at=self.clock.now())]

    def _may_escalate(self, w: Work) -> bool:
        return w.stop_attempts < self.tuning.terminate_attempts or not self.tuning.no_force

    def _no_force_reason(self, w: Work) -> str:
        return (f"{RELEASE_FAILED} after {w.stop_attempts} terminate(s); --no-force forbids force_terminate")

    # -- stop ---------------------------------------------------------------------------------------------------

    async def _stop(self, works: list[Work]) -> None:
        intents: list[Change] = []
        requests: dict[str, StopRequest] = {}
        for w in works:
            force = self.tuning.force or (
                w.model.last_status == RELEASE_FAILED and w.stop_attempts >= self.tuning.terminate_attempts
                and not self.tuning.no_force)
            kind = "force_terminate" if force else "terminate"
            if w.state is S.STOPPING:
                trigger, why = "resend", f"reconcile: outcome unknown, {kind} sent once more"
            elif w.state is S.RELEASING:
                step = "escalating to force_terminate" if force and not w.forced else f"{kind} again"
                trigger, why = "stop", (f"{RELEASE_FAILED} after {w.stop_attempts} terminate(s): {step} "
                                        f"(attempt {w.stop_attempts + 1})")
            else:
                trigger, why = "stop", f"{kind}: {w.model.last_status} must be stopped first"
            try:
                intents.append(self._change(w, trigger, detail=why))
            except (GuardRefused, InvalidTransition):
                w.observe = True
                continue
            w.forced = w.forced or force
            w.stop_attempts += 1
            intents[-1].fields.update(stop_attempts=w.stop_attempts, forced=w.forced)
            requests[w.job_id] = StopRequest(w.job_id, force=force, breakpoint=self.tuning.breakpoint)
        if not intents:
            return
        self._commit(intents)  # intent before action
        faultpoints.hit("after_intent", "stop")
        batches = _batches(list(requests.values()), self.tuning.batch_size)
        results = await asyncio.gather(*(self._send(self.client.stop(b)) for b in batches),
                                       return_exceptions=True)
        faultpoints.hit("after_response", "stop")
        changes: list[Change] = []
        for batch, result in zip(batches, results, strict=True):
            for req in batch:
                changes.extend(self._after_action(self.work_items[req.job_id], result, "stop"))
        self._commit(changes)

    # -- delete -------------------------------------------------------------------------------------------------

    async def _delete(self, works: list[Work]) -> None:
        intents: list[Change] = []
        permitted: list[tuple[Work, DeletePermit]] = []
        for w in works:
            resend = w.state is S.DELETING
            try:
                step, permit = self.lifecycle.delete(w.model)  # the guard
            except (GuardRefused, InvalidTransition):
                w.observe = True
                continue
            why = ("reconcile: outcome unknown, delete sent once more" if resend
                   else f"delete: {w.model.last_status} is deletable")
            intents.append(self._change(w, step=step, detail=why))
            permitted.append((w, permit))
        if not intents:
            return
        self._commit(intents)  # intent before action
        faultpoints.hit("after_intent", "delete")
        batches = _batches(permitted, self.tuning.batch_size)
        results = await asyncio.gather(*(self._send(self.client.delete([p for _, p in b])) for b in batches),
                                       return_exceptions=True)
        faultpoints.hit("after_response", "delete")
        changes: list[Change] = []
        for batch, result in zip(batches, results, strict=True):
            for w, _ in batch:
                changes.extend(self._after_action(w, result, "delete"))
        self._commit(changes)

    # -- results ------------------------------------------------------------------------------------------------

    def _after_action(self, w: Work, result: Any, kind: str) -> list[Change]:
        now = self.clock.now()
        if isinstance(result, AuthFailure):
            w.observe, w.next_check = True, now
            self.stop_event.set()
            self.abort = EngineAbort(f"credentials refused: {result.message}")
            return []
        if isinstance(result, BaseException):
            if not isinstance(result, DrsError):
                raise result
            return self._batch_failed(w, result, kind, now)
        item: ActionItem | None = result.items.get(w.job_id)
        rid = result.request_id
        if item is None:
            w.observe, w.next_check = True, now
            return [self._change(w, detail=f"{kind}: the answer did not list this task")]
        w.resends = 0  # a definite answer: the unknowns in a row are over
        if item.status == "success":
            w.busy_retries = 0
            if kind == "delete":
                return [self._change(w, "deleted", detail="delete accepted", request_id=rid)]
            w.observe, w.next_check = True, now + timedelta(seconds=self.tuning.poll_interval)
            w.unchanged_polls = 0
            return [self._change(w, "stop_accepted", detail="stop accepted", request_id=rid)]
        code = item.error_code
        message = f"{kind} refused: {code} {item.error_msg or ''}".strip()
        cls = classify_code(code)
        if cls is ErrorClass.GONE:
            trigger = "deleted" if kind == "delete" else "vanished"
            return [self._change(w, trigger, detail=message, error_code=code, request_id=rid)]
        if cls in (ErrorClass.BUSY, ErrorClass.RETRYABLE):
            w.busy_retries += 1
            self.stats["busy"] += 1
            w.observe, w.next_check = True, now + timedelta(seconds=self._backoff(w.busy_retries))
            return [self._change(w, "requeue", detail=message, error_code=code, request_id=rid)]
        if code == "DRS.M00308":
            return [self._change(w, "block", detail=f"{message} (dual-active DR child: act on its parent)",
                                 error_code=code, request_id=rid)]
        if code == "DRS.M00304" and w.rejections < MAX_REJECTIONS:
            w.rejections += 1
            w.observe, w.next_check = True, now + timedelta(seconds=self.tuning.poll_interval)
            return [self._change(w, "requeue", detail=f"{message}; reading the status again",
                                 error_code=code, request_id=rid)]
        return [self._change(w, "fail", detail=message, error_code=code, request_id=rid)]


    def _batch_failed(self, w: Work, exc: DrsError, kind: str, now: datetime) -> list[Change]:
        """The whole batch-jobs call failed: never sent, refused for good, or sent with an unknown outcome."""
        code = exc.code or fault_class(exc)
        w.error_code = code
        not_sent = isinstance(exc, TransportFailure) and not isinstance(exc, OutcomeUnknown)
        if not_sent or isinstance(exc, Throttled):
            # Never applied (connection refused, throttled to the end, no IAM token): observe, try again.
            self.stats[f"{kind}_not_sent"] += 1
            w.busy_retries += 1
            if kind == "stop":
                w.stop_attempts -= 1  # a terminate that never left is no attempt (escalation counts attempts)
            w.observe, w.next_check = True, now + timedelta(seconds=self._backoff(w.busy_retries))
            return [self._change(w, "requeue", detail=f"{kind} not sent: {exc.message}", error_code=code,
                                 request_id=exc.request_id)]
        if isinstance(exc, RequestRejected) and classify_code(exc.code) is ErrorClass.FATAL:
            return [self._change(w, "fail", detail=f"{kind} refused: {exc.message}", error_code=code,
                                 request_id=exc.request_id)]
        # Sent, and it may have taken effect: stay in the intent; the next read decides (never blindly).
        self.stats[f"{kind}_unknown"] += 1
        w.observe, w.next_check = True, now + timedelta(seconds=min(self.tuning.poll_interval, 5.0))
        change = self._change(w)
        change.fields["error_code"] = code
        change.event = Event(trigger="outcome_unknown", job_id=w.job_id, from_state=w.state.value,
                             to_state=w.state.value, remote_status=w.model.last_status, error_code=code,
                             request_ids=(exc.request_id,) if exc.request_id else (),
                             detail=f"{kind} outcome unknown: {exc.message}; reading the status first")
        return [change]


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
