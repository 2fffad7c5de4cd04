"""The simulated world: adding tasks and reading them (rows, details, snapshots) over the status machine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any

from orchestrator.drs.codes import DELETABLE, WAIT

from .jobs import Job, JobSpec, Kind, detail, list_row
from .machine import StatusMachine, period_order
from .state import WorldState


class World:
    """Every task, guarded by one lock; transitions are computed on read from the clock."""

    def __init__(self, state: WorldState, machine: StatusMachine) -> None:
        self.state = state
        self.machine = machine

    @property
    def lock(self) -> threading.RLock:
        return self.state.lock

    @property
    def jobs(self) -> dict[str, Job]:
        return self.state.jobs

    def settle(self) -> None:
        self.machine.settle()

    # -- adding tasks -------------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A version-4 UUID drawn from the seeded RNG; with job_id_style "drs", shaped like the documented ids
        (the last group ends in "jb" and two digits, e.g. ...-1040402fjb21)."""
        value = str(uuid.UUID(int=self.state.id_rng.getrandbits(128), version=4))
        if self.state.profile.job_id_style == "drs":
            value = f"{value[:-4]}jb{self.state.id_rng.randint(0, 99):02d}"
        return value

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
        state = self.state
        with state.lock:
            now = state.mono()
            created = now - created_ago
            job_id = self.new_id()
            job = Job(
                id=job_id,
                name=spec.name or f"drs-{spec.db_use_type.lower()}-{job_id[:8]}",
                db_use_type=spec.db_use_type,
                engine_type=spec.engine_type,
                status=spec.status,
                created_mono=created,
                updated_mono=created,
                kind=Kind.DUAL_PARENT if spec.multi_write else Kind.SINGLE,
                task_type=spec.task_type,
                job_direction=job_direction,
                net_type=net_type,
                description=spec.description,
                tags=[*tags, *({"key": k, "value": v} for k, v in spec.tags)],
                busy_times=spec.busy_times,
                release_fails=spec.release_fails,
                never_releases=spec.never_releases,
                inst_ip=f"192.168.{state.id_rng.randint(0, 254)}.{state.id_rng.randint(2, 254)}",
            )
            if spec.period_order_id:
                job.period_order = period_order(spec.period_order_id, state.wall(created), state.id_rng)
                job.order_active = spec.status not in DELETABLE and spec.status != "DELETED"
                job.resource_id = self.new_id()
                job.order_id = spec.period_order_id
            state.jobs[job_id] = job
            for n in range(spec.children):
                self._add_child(job, n, spec)
            self.machine.enter(job, spec.status, now)
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
        self.state.jobs[child_id] = child
        parent.child_ids.append(child_id)
        if not dual:
            self.machine.enter(child, spec.child_status, self.state.mono())

    # -- reads (call settle() first, under the lock) --------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """A live or DELETED task (None once purged or if it never existed); ids compare case-sensitively."""
        return self.state.jobs.get(job_id)

    def missing_code(self, job_id: str) -> str:
        return self.state.missing_code(job_id)

    def detail_of(self, job: Job) -> dict[str, Any]:
        return detail(job, self.state.wall(job.created_mono), self.state.wall(job.updated_mono))

    def top_level(self) -> list[Job]:
        """Tasks shown as rows of the list API: live ones whose parent is not itself listed.

        With the profile's children_top_level, re-edit children are rows too (and still in their parent's
        children[]): whether the real list does that is unknown (reference §14.7).
        """
        listed = {j.id for j in self.state.jobs.values() if j.status != "DELETED"}
        also_children = self.state.profile.children_top_level
        return [
            j
            for j in self.state.jobs.values()
            if j.id in listed
            and (j.parent_id is None or j.parent_id not in listed or (also_children and j.kind is Kind.REEDIT_CHILD))
        ]

    def list_entry(self, job: Job) -> dict[str, Any]:
        """A list row with its children (dual-active nodes, re-edit sub-tasks) nested in children[]."""
        row = list_row(job, self.state.wall(job.created_mono))
        children = []
        for child_id in job.child_ids:
            child = self.state.jobs.get(child_id)
            if child is not None and child.status != "DELETED":
                c = list_row(child, self.state.wall(child.created_mono))
                c["error_msg"] = child.error_message
                children.append(c)
        row["children"] = children
        return row

    def served(self, job: Job, shown: str | None) -> None:
        self.machine.served(job, shown)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """id -> detail-like dict (plus the simulator's own fields) of every readable task."""
        with self.state.lock:
            self.settle()
            out = {}
            for job in self.state.jobs.values():
                d = self.detail_of(job)
                d.update(
                    kind=job.kind.value,
                    child_ids=list(job.child_ids),
                    order_active=job.order_active,
                    parent_id=job.parent_id,
                    resource_id=job.resource_id,
                    unsubscribed=job.unsubscribed,
                )
                out[job.id] = d
            return out

    def violate(self, rule: str, job_id: str | None = None, detail_text: str = "") -> None:
        self.state.violate(rule, job_id, detail_text)
