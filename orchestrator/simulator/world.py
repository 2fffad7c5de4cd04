"""The simulated world: tasks, their status machine (advanced lazily from the clock), and the batch rules."""

from __future__ import annotations

import heapq
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from orchestrator.drs.codes import DELETABLE, RELEASE_FAILED, STOPPABLE, WAIT

from .clock import Clock
from .jobs import Job, JobSpec, Kind, detail, list_row
from .messages import PERIOD_ORDER_MSG, drs_message
from .profiles import Profile

# Transitional statuses the service moves on by itself, and where they go (release and create outcomes are
# decided when they are entered, see World._schedule).
_SETTLES_TO: dict[str, str] = {
    "CHILD_TRANSFER_STARTING": "CHILD_TRANSFER_STARTED",
    "REBUILD_NODE_STARTED": "INCRE_TRANSFER_STARTED",
    "CHANGE_JOB_STARTED": "INCRE_TRANSFER_STARTED",
    "NODE_UPGRADE_START": "NODE_UPGRADE_COMPLETE",
    "RELEASE_CHILD_TRANSFER_STARTED": "RELEASE_CHILD_TRANSFER_COMPLETE",
}
_RELEASED = frozenset({"RELEASE_RESOURCE_COMPLETE", "RELEASE_CHILD_TRANSFER_COMPLETE"})
DELETE_TYPES: tuple[str, ...] = ("terminate", "force_terminate", "delete")

VIOLATIONS: tuple[str, ...] = (
    "delete_not_deletable",
    "action_on_deleted",
    "action_on_period_order",
    "child_id",
    "unknown_job_action",
    "redundant_stop",
    "bad_request",
    "unauthenticated",
)


class World:
    """Every task, guarded by one lock; transitions are computed on read from the clock."""

    def __init__(self, clock: Clock, profile: Profile, seed: int) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.profile = profile
        self.jobs: dict[str, Job] = {}
        self.purged: set[str] = set()
        self.violations: Counter[str] = Counter()
        self.violation_log: list[dict[str, Any]] = []
        self.destructive_calls: list[dict[str, Any]] = []
        # Ids come from the seeded RNG (same seed, same ids); runtime draws (jitter, failures) from another
        # so that adding a job never shifts the outcome of a release.
        self.id_rng = random.Random(seed)
        self.rng = random.Random(f"runtime-{seed}")
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0

    # -- time ---------------------------------------------------------------------------------------------

    def mono(self) -> float:
        return self.clock.monotonic()

    def wall(self, mono: float) -> datetime:
        """The wall time of a monotonic instant."""
        return self.clock.now() - timedelta(seconds=self.clock.monotonic() - mono)

    def _span(self, span: tuple[float, float]) -> float:
        return self.rng.uniform(*span)

    def _push(self, at: float, job_id: str, what: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, job_id, what))

    def settle(self) -> None:
        """Apply every transition and purge that is due by now (the lazy status machine)."""
        now = self.mono()
        while self._heap and self._heap[0][0] <= now:
            at, _, job_id, what = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if what == "next" and job.next_at == at and job.next_status:
                status, job.next_at, job.next_status = job.next_status, None, None
                self._enter(job, status, at)
            elif what == "purge" and job.purge_at == at:
                self._purge(job)

    # -- the status machine -------------------------------------------------------------------------------

    def _enter(self, job: Job, status: str, at: float, *, force: bool = False) -> None:
        """Move a task to a status at a (monotonic) time and schedule what follows it."""
        job.status = status
        job.updated_mono = at
        job.next_at = job.next_status = None
        if status == "RELEASE_RESOURCE_COMPLETE" and job.engine_type.endswith("mysql"):
            # The breakpoint is exposed on the detail (§3): a GTID set and the binlog position.
            job.gtid = f"{uuid.UUID(int=self.rng.getrandbits(128))}:1-{self.rng.randint(1000, 99999)}"
            job.incre_start_position = (
                f"mysql-bin.{self.rng.randint(1, 999):06d}:{self.rng.randint(4, 10**7)}"
            )
        if status == RELEASE_FAILED:
            job.error_message = "Failed to release the replication instance resources."
        elif status in ("RELEASE_RESOURCE_STARTED", "RELEASE_RESOURCE_COMPLETE"):
            job.error_message = ""
        self._schedule(job, status, at, force=force)
        if job.kind is Kind.DUAL_PARENT:
            # Dual-active children follow the parent; only the parent may be called (HW-DEL).
            for child_id in job.child_ids:
                child = self.jobs.get(child_id)
                if child is not None:
                    child.status, child.updated_mono = status, at
                    child.gtid, child.incre_start_position = job.gtid, job.incre_start_position
                    child.error_message = job.error_message

    def _schedule(self, job: Job, status: str, at: float, *, force: bool) -> None:
        p = self.profile
        nxt: str | None = None
        after = 0.0
        if status == "CREATING":
            nxt = "CREATE_FAILED" if self.rng.random() < p.create_fail_rate else "CONFIGURATION"
            after = self._span(p.create_seconds)
        elif status == "STARTJOBING":
            nxt = "INCRE_TRANSFER_STARTED" if job.task_type == "INCR_TRANS" else "FULL_TRANSFER_STARTED"
            after = self._span(p.start_seconds)
        elif status == "RELEASE_RESOURCE_STARTED":
            if job.never_releases:
                return
            fails = not force and (job.release_fails or self.rng.random() < p.release_fail_rate)
            nxt = RELEASE_FAILED if fails else "RELEASE_RESOURCE_COMPLETE"
            after = self._span(p.release_seconds)
        elif status == "RELEASE_CHILD_TRANSFER_STARTED":
            nxt, after = _SETTLES_TO[status], self._span(p.release_seconds)
        elif status in _SETTLES_TO:
            nxt, after = _SETTLES_TO[status], self._span(p.start_seconds)
        elif status == "DELETED":
            job.purge_at = at + p.deleted_retention_seconds
            self._push(job.purge_at, job.id, "purge")
        if nxt is not None:
            job.next_at, job.next_status = at + after, nxt
            self._push(job.next_at, job.id, "next")

    def _purge(self, job: Job) -> None:
        for job_id in [job.id, *(job.child_ids if job.kind is Kind.DUAL_PARENT else [])]:
            self.jobs.pop(job_id, None)
            self.purged.add(job_id)

    # -- adding tasks -------------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A version-4 UUID drawn from the seeded RNG."""
        return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    def add(
        self,
        spec: JobSpec,
        *,
        created_ago: float = 0.0,
        tags: Iterable[dict[str, str]] = (),
        net_type: str = "vpc",
        job_direction: str = "up",
    ) -> str:
        """Add a task (and its children) in the spec's status; transitional statuses start moving now."""
        spec.validate()
        with self.lock:
            now = self.mono()
            created = now - created_ago
            job_id = self.new_id()
            kind = Kind.DUAL_PARENT if spec.multi_write else Kind.SINGLE
            job = Job(
                id=job_id,
                name=spec.name or f"drs-{spec.db_use_type.lower()}-{job_id[:8]}",
                db_use_type=spec.db_use_type,
                engine_type=spec.engine_type,
                status=spec.status,
                created_mono=created,
                updated_mono=created,
                kind=kind,
                task_type=spec.task_type,
                job_direction=job_direction,
                net_type=net_type,
                description=spec.description,
                tags=[*tags, *({"key": k, "value": v} for k, v in spec.tags)],
                busy_times=spec.busy_times,
                release_fails=spec.release_fails,
                never_releases=spec.never_releases,
                inst_ip=f"192.168.{self.id_rng.randint(0, 254)}.{self.id_rng.randint(2, 254)}",
            )
            if spec.period_order_id:
                job.period_order = _period_order(spec.period_order_id, self.wall(created), self.id_rng)
                job.order_active = spec.status not in DELETABLE and spec.status != "DELETED"
            self.jobs[job_id] = job
            for n in range(spec.children):
                self._add_child(job, n, spec)
            self._enter(job, spec.status, now)
            job.updated_mono = created if spec.status not in WAIT else now
            return job_id

    def _add_child(self, parent: Job, n: int, spec: JobSpec) -> None:
        child_id = self.new_id()
        dual = parent.kind is Kind.DUAL_PARENT
        child = Job(
            id=child_id,
            name=f"{parent.name}-{'node' if dual else 'child'}{n + 1}",
            db_use_type=parent.db_use_type,
            engine_type=parent.engine_type,
            status=parent.status if dual else spec.child_status,
            created_mono=parent.created_mono,
            updated_mono=parent.created_mono,
            kind=Kind.DUAL_CHILD if dual else Kind.REEDIT_CHILD,
            task_type=parent.task_type,
            job_direction=parent.job_direction,
            net_type=parent.net_type,
            parent_id=parent.id,
            tags=list(parent.tags),
            inst_ip=parent.inst_ip,
        )
        self.jobs[child_id] = child
        parent.child_ids.append(child_id)
        if not dual:
            self._enter(child, spec.child_status, self.mono())

    # -- reads --------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """A live or DELETED task (None once purged or if it never existed); call settle() first."""
        return self.jobs.get(job_id)

    def missing_code(self, job_id: str) -> str:
        """Why an id is not readable: purged after deletion, or it never existed."""
        return "DRS.M05004" if job_id in self.purged else "DRS.M00289"

    def detail_of(self, job: Job) -> dict[str, Any]:
        return detail(job, self.wall(job.created_mono), self.wall(job.updated_mono))

    def top_level(self) -> list[Job]:
        """Tasks shown as rows of the list API: live ones whose parent is not itself listed."""
        listed = {j.id for j in self.jobs.values() if j.status != "DELETED"}
        return [
            j
            for j in self.jobs.values()
            if j.id in listed and (j.parent_id is None or j.parent_id not in listed)
        ]

    def list_entry(self, job: Job) -> dict[str, Any]:
        """A list row with its children (dual-active nodes, re-edit sub-tasks) nested in children[]."""
        row = list_row(job, self.wall(job.created_mono))
        children = []
        for child_id in job.child_ids:
            child = self.jobs.get(child_id)
            if child is not None and child.status != "DELETED":
                c = list_row(child, self.wall(child.created_mono))
                c["error_msg"] = child.error_message
                children.append(c)
        row["children"] = children
        return row

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """id -> detail-like dict (plus the simulator's own fields) of every readable task."""
        with self.lock:
            self.settle()
            out = {}
            for job in self.jobs.values():
                d = self.detail_of(job)
                d.update(
                    kind=job.kind.value,
                    child_ids=list(job.child_ids),
                    order_active=job.order_active,
                    parent_id=job.parent_id,
                )
                out[job.id] = d
            return out

    # -- rule breaking ------------------------------------------------------------------------------------

    def violate(self, rule: str, job_id: str | None = None, detail_text: str = "") -> None:
        """Count one broken rule (and keep a log line saying which task and why)."""
        with self.lock:
            self.violations[rule] += 1
            self.violation_log.append(
                {"rule": rule, "job_id": job_id, "detail": detail_text, "at": self.clock.now().isoformat()}
            )

    # -- batch-jobs ---------------------------------------------------------------------------------------

    def batch_jobs(self, items: list[tuple[str, str]], lang: str) -> list[dict[str, Any]]:
        """Apply terminate/force_terminate/delete items in order; one result per item (the 202 body)."""
        with self.lock:
            self.settle()
            return [self._one_item(job_id, delete_type, lang) for job_id, delete_type in items]

    def _one_item(self, job_id: str, delete_type: str, lang: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        before = job.status if job else None
        code, message = self._refusal(job, job_id, delete_type, lang)
        if code is None and job is not None:
            now = self.mono()
            if delete_type == "delete":
                self._enter(job, "DELETED", now)
            elif job.kind is Kind.REEDIT_CHILD:
                self._enter(job, "RELEASE_CHILD_TRANSFER_STARTED", now)
            else:
                self._enter(job, "RELEASE_RESOURCE_STARTED", now, force=delete_type == "force_terminate")
        self.destructive_calls.append(
            {
                "job_id": job_id,
                "delete_type": delete_type,
                "result": "failed" if code else "success",
                "error_code": code,
                "status_before": before,
                "at": self.clock.now().isoformat(),
            }
        )
        if code is None:
            return {"id": job_id, "status": "success"}
        return {"id": job_id, "status": "failed", "error_code": code, "error_msg": message}

    def _refusal(self, job: Job | None, job_id: str, delete_type: str, lang: str) -> tuple[str | None, str]:
        """Why DRS refuses this item (code, message), or (None, '') to accept it; counts violations."""
        if job is None:
            code = self.missing_code(job_id)
            self.violate(
                "action_on_deleted" if code == "DRS.M05004" else "unknown_job_action", job_id, delete_type
            )
            return code, drs_message(code, lang)
        if job.status == "DELETED":
            self.violate("action_on_deleted", job_id, delete_type)
            return "DRS.M05004", drs_message("DRS.M05004", lang)
        if job.kind is Kind.DUAL_CHILD:
            self.violate("child_id", job_id, f"{delete_type} on a dual-active child of {job.parent_id}")
            return "DRS.M00308", drs_message("DRS.M00308", lang)
        if job.is_period():
            self.violate(
                "action_on_period_order", job_id, f"{delete_type} with order {job.period_order['order_id']}"
            )
            return "DRS.M00304", PERIOD_ORDER_MSG[1 if lang == "zh-cn" else 0]
        if delete_type == "delete":
            if job.status not in DELETABLE:
                self.violate("delete_not_deletable", job_id, f"delete in {job.status}")
                return "DRS.M00304", drs_message("DRS.M00304", lang)
        elif job.status not in STOPPABLE and job.status != RELEASE_FAILED:
            self.violate("redundant_stop", job_id, f"{delete_type} in {job.status}")
            return "DRS.M00304", drs_message("DRS.M00304", lang)
        if self._busy(job):
            return "DRS.M01504", drs_message("DRS.M01504", lang)
        return None, ""

    def _busy(self, job: Job) -> bool:
        if job.busy_times > 0:
            job.busy_times -= 1
            return True
        return self.rng.random() < self.profile.faults_for("batch-jobs").busy_rate

    # -- operator actions ---------------------------------------------------------------------------------

    def unsubscribe(self, job_id: str) -> str:
        """The operator unsubscribes a yearly/monthly order: the task releases itself, then is deletable."""
        with self.lock:
            self.settle()
            job = self.jobs.get(job_id)
            if job is None or job.status == "DELETED":
                raise KeyError(job_id)
            if not job.is_period():
                raise ValueError(f"{job_id} has no active yearly/monthly order")
            job.order_active = False
            job.period_order["status"] = "CANCELED"
            if job.status in STOPPABLE or job.status == RELEASE_FAILED:
                self._enter(job, "RELEASE_RESOURCE_STARTED", self.mono(), force=True)
            return job.status


def _period_order(order_id: str, created: datetime, rng: random.Random) -> dict[str, Any]:
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
