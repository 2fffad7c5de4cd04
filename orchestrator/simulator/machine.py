"""The status machine: transitions applied lazily from the clock, and the changes nobody asked for (drift)."""

from __future__ import annotations

import heapq
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from orchestrator.drs.codes import DELETABLE, RELEASE_FAILED, STOPPABLE

from .jobs import Job, Kind
from .state import WorldState

# Transitional statuses the service moves on by itself, and where they go (release and create outcomes are
# decided when they are entered, see StatusMachine._schedule).
_SETTLES_TO: dict[str, str] = {
    "CHILD_TRANSFER_STARTING": "CHILD_TRANSFER_STARTED",
    "REBUILD_NODE_STARTED": "INCRE_TRANSFER_STARTED",
    "CHANGE_JOB_STARTED": "INCRE_TRANSFER_STARTED",
    "NODE_UPGRADE_START": "NODE_UPGRADE_COMPLETE",
    "RELEASE_CHILD_TRANSFER_STARTED": "RELEASE_CHILD_TRANSFER_COMPLETE",
}
# What a scripted or random change does to a task (issue 12: drift between plan and action).
# purge: someone else deleted the task and the service forgot it (it reads as unknown: DRS.M00289 / a 400).
DRIFTS: tuple[str, ...] = ("restart", "deletable", "gain_order", "purge")
_HISTORY = 8


def breakpoint_of(job: Job) -> bool:
    """MySQL-source sync and migration tasks expose a breakpoint (gtid, incre_start_position) once stopped."""
    return job.db_use_type in ("sync", "migration") and job.engine_type.startswith("mysql")


class StatusMachine:
    """Moves tasks between statuses; a heap of due events is applied by settle() before every read or action."""

    def __init__(self, state: WorldState) -> None:
        self.state = state
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        # job id -> [change, reads left before it happens]
        self.scripts: dict[str, list[str | int]] = {}

    def push(self, at: float, job_id: str, what: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, job_id, what))

    def settle(self) -> None:
        """Apply every transition, release and purge that is due by now (the lazy status machine)."""
        now = self.state.mono()
        while self._heap and self._heap[0][0] <= now:
            at, _, job_id, what = heapq.heappop(self._heap)
            job = self.state.jobs.get(job_id)
            if job is None:
                continue
            if what == "next" and job.next_at == at and job.next_status:
                status, job.next_at, job.next_status = job.next_status, None, None
                self.enter(job, status, at)
            elif what == "purge" and job.purge_at == at:
                self._purge(job)
            elif what == "unsubscribed" and (job.status in STOPPABLE or job.status == RELEASE_FAILED):
                # An unsubscribed order releases the task by itself, without any terminate (reference §3).
                self.enter(job, "RELEASE_RESOURCE_STARTED", at, force=True)

    # -- entering a status --------------------------------------------------------------------------------

    def enter(self, job: Job, status: str, at: float, *, force: bool = False) -> None:
        """Move a task to a status at a (monotonic) time and schedule what follows it."""
        rng = self.state.rng
        job.status = status
        job.updated_mono = at
        job.next_at = job.next_status = None
        job.history = [*job.history[-(_HISTORY - 1):], status]
        if status == "RELEASE_RESOURCE_COMPLETE" and breakpoint_of(job):
            # The breakpoint is exposed on the detail (§5): a GTID set and the binlog position.
            source = str(uuid.UUID(int=rng.getrandbits(128))).upper()
            job.gtid = f"{source}:1-{rng.randint(5, 99999)}"
            job.incre_start_position = f"mysql-bin.{rng.randint(1, 999):06d}:{rng.randint(4, 10**7)}"
        if status == RELEASE_FAILED:
            job.error_message = "Failed to release the replication instance resources."
        elif status in ("RELEASE_RESOURCE_STARTED", "RELEASE_RESOURCE_COMPLETE"):
            job.error_message = ""
        if status == "RELEASE_RESOURCE_COMPLETE" and job.unsubscribed:
            if self.state.profile.unsubscribed_order == "cleared":
                job.period_order = {}
            else:
                job.period_order["status"] = "CANCELED"
        self._schedule(job, status, at, force=force)
        if job.kind is Kind.DUAL_PARENT:
            # Dual-active children follow the parent; only the parent may be called (HW-DEL).
            for child_id in job.child_ids:
                child = self.state.jobs.get(child_id)
                if child is not None:
                    child.status, child.updated_mono = status, at
                    child.history = [*child.history[-(_HISTORY - 1):], status]
                    child.gtid, child.incre_start_position = job.gtid, job.incre_start_position
                    child.error_message = job.error_message

    def _schedule(self, job: Job, status: str, at: float, *, force: bool) -> None:
        p, state = self.state.profile, self.state
        nxt: str | None = None
        after = 0.0
        if status == "CREATING":
            nxt = "CREATE_FAILED" if state.rng.random() < p.create_fail_rate else "CONFIGURATION"
            after = state.span(p.create_seconds)
        elif status == "STARTJOBING":
            nxt = "INCRE_TRANSFER_STARTED" if job.task_type == "INCR_TRANS" else "FULL_TRANSFER_STARTED"
            after = state.span(p.start_seconds)
        elif status == "RELEASE_RESOURCE_STARTED":
            if job.never_releases:
                return
            fails = not force and (job.release_fails or state.rng.random() < p.release_fail_rate)
            nxt = RELEASE_FAILED if fails else "RELEASE_RESOURCE_COMPLETE"
            after = state.span(p.release_seconds)
        elif status == "RELEASE_CHILD_TRANSFER_STARTED":
            nxt, after = _SETTLES_TO[status], state.span(p.release_seconds)
        elif status in _SETTLES_TO:
            nxt, after = _SETTLES_TO[status], state.span(p.start_seconds)
        elif status == "DELETED":
            job.purge_at = at + p.deleted_retention_seconds
            self.push(job.purge_at, job.id, "purge")
        if nxt is not None:
            job.next_at, job.next_status = at + after, nxt
            self.push(job.next_at, job.id, "next")

    def _purge(self, job: Job) -> None:
        for job_id in [job.id, *(job.child_ids if job.kind is Kind.DUAL_PARENT else [])]:
            self.state.jobs.pop(job_id, None)
            self.state.purged.add(job_id)

    def release_after_unsubscribe(self, job: Job) -> None:
        """BSS accepted the unsubscribe: the task releases itself after a delay."""
        job.order_active = False
        job.unsubscribed = True
        if self.state.profile.unsubscribed_order == "canceled" and job.period_order:
            job.period_order["status"] = "CANCELED"
        self.push(self.state.mono() + self.state.span(self.state.profile.unsubscribe_release_delay_seconds),
                  job.id, "unsubscribed")

    # -- drift ----------------------------------------------------------------------------------------------

    def drift(self, job: Job, change: str, order_id: str | None = None) -> None:
        """A change the client did not cause: someone restarted, stopped or converted the task."""
        now = self.state.mono()
        if change == "restart":
            self.enter(job, "CHILD_TRANSFER_STARTED" if job.kind is Kind.REEDIT_CHILD
                       else "INCRE_TRANSFER_STARTED", now)
        elif change == "deletable":
            self.enter(job, "RELEASE_CHILD_TRANSFER_COMPLETE" if job.kind is Kind.REEDIT_CHILD
                       else "RELEASE_RESOURCE_COMPLETE", now)
        elif change == "gain_order":
            from_order = order_id or "CS" + "".join(self.state.rng.choices("0123456789ABCDEF", k=14))
            job.period_order = period_order(from_order, self.state.wall(now), self.state.rng)
            job.order_active, job.unsubscribed, job.order_id = True, False, from_order
            job.order_unseen = True
            job.resource_id = job.resource_id or str(uuid.UUID(int=self.state.rng.getrandbits(128), version=4))
        elif change == "purge":
            self._purge(job)
        else:
            raise ValueError(f"unknown drift {change!r}; known: {', '.join(DRIFTS)}")
        job.drift_pending = True

    def script(self, job_id: str, change: str, after_reads: int) -> None:
        """Apply a change once the task has been served in `after_reads` more read answers (0: now)."""
        if change not in DRIFTS:
            raise ValueError(f"unknown drift {change!r}; known: {', '.join(DRIFTS)}")
        job = self.state.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if after_reads <= 0:
            self.drift(job, change)
        else:
            self.scripts[job_id] = [change, after_reads]

    def served(self, job: Job, shown: str | None) -> None:
        """A read answer showed the task (with this status): scripted changes count down, random drift may hit.

        An answer that showed another status than the true one (a stale read) leaves the client's view wrong
        through no fault of its own: its next refusal is excused like one after drift.
        """
        job.drift_pending = shown != job.status
        script = self.scripts.get(job.id)
        if script is not None:
            script[1] = int(script[1]) - 1
            if int(script[1]) <= 0:
                del self.scripts[job.id]
                self.drift(job, str(script[0]))
                return
        rate = self.state.profile.drift_rate
        if rate and job.kind is not Kind.DUAL_CHILD and self.state.rng.random() < rate:
            if job.status == "RELEASE_RESOURCE_COMPLETE":
                self.drift(job, "restart")
            elif job.status in STOPPABLE and job.status not in DELETABLE and not job.period_order:
                self.drift(job, "deletable")


def period_order(order_id: str, created: datetime, rng: random.Random) -> dict[str, Any]:
    """A yearly/monthly order as the detail shows it (period_type 2 = month, 3 = year)."""
    period_type = rng.choice((2, 3))
    num = rng.randint(1, 9) if period_type == 2 else rng.randint(1, 3)
    days = 30 * num if period_type == 2 else 365 * num
    return {
        "order_id": order_id,
        "status": "COMPLETED",
        "charging_mode": 1,
        "period_type": period_type,
        "period_num": num,
        "is_auto_renew": rng.choice((0, 1)),
        "eff_time": str(int(created.timestamp() * 1000)),
        "exp_time": str(int((created + timedelta(days=days)).timestamp() * 1000)),
    }
