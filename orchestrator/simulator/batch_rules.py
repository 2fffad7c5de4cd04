"""DELETE batch-jobs: the service's per-item rules (what is refused, with which code) and what an accepted item does."""

from __future__ import annotations

from typing import Any

from orchestrator.drs.codes import DELETABLE, RELEASE_FAILED, STOPPABLE

from .jobs import Job, Kind
from .machine import StatusMachine
from .messages import PERIOD_ORDER_MSG, UNSUBSCRIBED_RELEASING_MSG, drs_message
from .state import WorldState

DELETE_TYPES: tuple[str, ...] = ("terminate", "force_terminate", "delete")


class BatchRules:
    """Applies terminate/force_terminate/delete items in order; every refusal a careful client avoids is counted."""

    def __init__(self, state: WorldState, machine: StatusMachine) -> None:
        self.state = state
        self.machine = machine

    def apply(self, items: list[tuple[str, str]], lang: str) -> list[dict[str, Any]]:
        """One result per item, in request order (the 202 body's results)."""
        with self.state.lock:
            self.machine.settle()
            return [self._one(job_id, delete_type, lang) for job_id, delete_type in items]

    def _one(self, job_id: str, delete_type: str, lang: str) -> dict[str, Any]:
        state = self.state
        job = state.jobs.get(job_id)
        before = job.status if job else None
        code, message = self._refusal(job, job_id, delete_type, lang)
        if code is None and job is not None:
            self._accept(job, delete_type)
        state.ledger.destructive(
            {
                "job_id": job_id,
                "delete_type": delete_type,
                "result": "failed" if code else "success",
                "error_code": code,
                "status_before": before,
                "at": state.clock.now().isoformat(),
            }
        )
        if code is None:
            return {"id": job_id, "status": "success"}
        return {"id": job_id, "status": "failed", "error_code": code, "error_msg": message}

    def _accept(self, job: Job, delete_type: str) -> None:
        now = self.state.mono()
        if delete_type == "delete":
            live = self._live_reedit_children(job)
            if live:
                # They stay alive, orphaned, and turn into top-level rows: a client's final check must catch it.
                self.state.violate("parent_deleted_with_live_children", job.id,
                                   f"re-edit children still alive: {', '.join(live)}")
            self.machine.enter(job, "DELETED", now)
        elif job.kind is Kind.REEDIT_CHILD:
            self.machine.enter(job, "RELEASE_CHILD_TRANSFER_STARTED", now)
        else:
            self.machine.enter(job, "RELEASE_RESOURCE_STARTED", now, force=delete_type == "force_terminate")
            if self.state.profile.parent_stop_reaches_children:
                for child in self._children(job):
                    if child.status in STOPPABLE:
                        self.machine.enter(child, "RELEASE_CHILD_TRANSFER_STARTED", now)

    def _children(self, job: Job) -> list[Job]:
        if job.kind is not Kind.SINGLE:
            return []
        found = (self.state.jobs.get(c) for c in job.child_ids)
        return [c for c in found if c is not None and c.kind is Kind.REEDIT_CHILD]

    def _live_reedit_children(self, job: Job) -> list[str]:
        return [c.id for c in self._children(job) if c.status != "DELETED"]

    def _refusal(self, job: Job | None, job_id: str, delete_type: str, lang: str) -> tuple[str | None, str]:
        """Why DRS refuses this item (code, message), or (None, '') to accept it; counts violations."""
        state = self.state
        if job is None:
            code = state.missing_code(job_id)
            state.violate(
                "action_on_deleted" if code == "DRS.M05004" else "unknown_job_action", job_id, delete_type
            )
            return code, drs_message(code, lang)
        if job.status == "DELETED":
            state.violate("action_on_deleted", job_id, delete_type)
            return "DRS.M05004", drs_message("DRS.M05004", lang)
        if job.kind is Kind.DUAL_CHILD:
            state.violate("child_id", job_id, f"{delete_type} on a dual-active child of {job.parent_id}")
            return "DRS.M00308", drs_message("DRS.M00308", lang)
        if job.is_period():
            if job.order_unseen:  # gained after the client's last detail read: it could not have known
                job.order_unseen, job.drift_pending = False, True
            self._status_violation(job, "action_on_period_order",
                                   f"{delete_type} with order {job.period_order['order_id']}")
            return "DRS.M00304", PERIOD_ORDER_MSG[1 if lang == "zh-cn" else 0]
        if job.is_releasing_after_unsubscribe():
            self._status_violation(job, "action_on_period_order", f"{delete_type} while releasing after unsubscribe")
            return "DRS.M00304", UNSUBSCRIBED_RELEASING_MSG[1 if lang == "zh-cn" else 0]
        if delete_type == "delete":
            if job.status not in DELETABLE:
                self._status_violation(job, "delete_not_deletable", f"delete in {job.status}")
                return "DRS.M00304", drs_message("DRS.M00304", lang)
        elif job.status not in STOPPABLE and job.status != RELEASE_FAILED:
            self._status_violation(job, "redundant_stop", f"{delete_type} in {job.status}")
            return "DRS.M00304", drs_message("DRS.M00304", lang)
        if self._busy(job):
            return "DRS.M01504", drs_message("DRS.M01504", lang)
        return None, ""

    def _status_violation(self, job: Job, rule: str, detail: str) -> None:
        """A refusal for the task's status: the client's fault, unless the world changed since it last read it."""
        if job.drift_pending:
            job.drift_pending = False  # excused once: a blind repeat is the client's fault again
            self.state.ledger.excuse(job.id, f"{rule}: {detail}", self.state.clock.now())
            return
        self.state.violate(rule, job.id, detail)

    def _busy(self, job: Job) -> bool:
        if job.busy_times > 0:
            job.busy_times -= 1
            return True
        return self.state.rng.random() < self.state.profile.faults_for("batch-jobs").busy_rate
