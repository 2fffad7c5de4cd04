"""BSS: the yearly/monthly orders behind period tasks, their resources, and unsubscribing them (reference §3).

`POST /v2/orders/suscriptions/resources/query` (spelled so, as the Terraform provider does) lists the resources
of an order; `POST /v2/orders/subscriptions/resources/unsubscribe` unsubscribes resources and lists refusals in
`fail_resource_infos[]`. After an accepted unsubscribe the task releases itself after a delay, with no terminate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from orchestrator.drs.codes import RELEASE_FAILED, STOPPABLE

from .bodies import BadRequest
from .jobs import Job
from .machine import StatusMachine
from .messages import BSS_ERRORS, bss_message
from .state import WorldState

MAX_LIMIT = 500
_KNOWN = frozenset(BSS_ERRORS)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Billing:
    """Orders and resources of the world's period tasks; refusals scripted per task or drawn from the profile."""

    def __init__(self, state: WorldState, machine: StatusMachine) -> None:
        self.state = state
        self.machine = machine
        # job id -> [error code, message or "", times left]
        self.refusals: dict[str, list[Any]] = {}

    def _ordered(self) -> list[Job]:
        return [j for j in self.state.jobs.values() if j.order_id]

    def _by_resource(self, resource_id: str) -> Job | None:
        return next((j for j in self.state.jobs.values() if j.resource_id and j.resource_id == resource_id), None)

    def refuse(self, job_id: str, code: str = "CBC.30000054", message: str = "", times: int = 1) -> None:
        """The next `times` unsubscribes of this task's resource are refused in fail_resource_infos."""
        with self.state.lock:
            if job_id not in self.state.jobs:
                raise KeyError(job_id)
            self.refusals[job_id] = [code, message, times]

    # -- the two calls ------------------------------------------------------------------------------------

    def query(self, data: dict[str, Any], lang: str) -> tuple[int, dict[str, Any]]:
        """The resources of an order (or of listed resource ids), with paging by offset/limit."""
        order_id = data.get("order_id")
        resource_ids = data.get("resource_ids")
        if order_id is not None and not isinstance(order_id, str):
            raise BadRequest("CBC.0100", "order_id")
        if resource_ids is not None and (
            not isinstance(resource_ids, list) or not all(isinstance(r, str) for r in resource_ids)
        ):
            raise BadRequest("CBC.0100", "resource_ids")
        offset, limit = data.get("offset", 0), data.get("limit", 10)
        for name, value, low in (("offset", offset, 0), ("limit", limit, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 10**6:
                raise BadRequest("CBC.0100", name)
        limit = min(limit, MAX_LIMIT)
        statuses = data.get("status_list")
        with self.state.lock:
            self.machine.settle()
            found = [
                j for j in self._ordered()
                if (order_id is None or j.order_id == order_id)
                and (resource_ids is None or j.resource_id in resource_ids)
            ]
            rows = [self._row(j) for j in found]
            if isinstance(statuses, list):
                rows = [r for r in rows if r["status"] in statuses]
            self.state.ledger.bss({"call": "query", "order_ids": sorted({r["order_id"] for r in rows}
                                                                         | ({order_id} if order_id else set())),
                                   "resource_ids": [r["resource_id"] for r in rows],
                                   "at": self.state.clock.now().isoformat()})
        return 200, {"total_count": len(rows), "data": rows[offset:offset + limit]}

    def _row(self, job: Job) -> dict[str, Any]:
        created = self.state.wall(job.created_mono)
        order_id = job.order_id
        return {
            "id": job.resource_id,
            "resource_id": job.resource_id,
            "resource_name": job.name,
            "region_code": self.state.region,
            "project_id": self.state.project_id,
            "cloud_service_type_code": "hws.service.type.drs",
            "resource_type_code": "hws.resource.type.drs.vm",
            "resource_spec_code": "drs.high",
            "main_resource_id": job.resource_id,
            "is_main_resource": 1,
            "order_id": order_id,
            # 2 in use, 3 closed (unsubscribed), as BSS numbers resource statuses.
            "status": 3 if job.unsubscribed else 2,
            "effective_time": _iso(created),
            "expire_time": _iso(created + timedelta(days=365)),
            "expire_policy": 0,
        }

    def unsubscribe(self, data: dict[str, Any], lang: str) -> tuple[int, dict[str, Any]]:
        """Unsubscribe resources (unsubscribe_type 1): accepted ones release by themselves, refusals are listed."""
        resource_ids = data.get("resource_ids")
        if not isinstance(resource_ids, list) or not resource_ids or not all(
            isinstance(r, str) and r for r in resource_ids
        ):
            raise BadRequest("CBC.0100", "resource_ids")
        kind = data.get("unsubscribe_type")
        if isinstance(kind, bool) or kind != 1:
            # 1 unsubscribes the resource and what is attached to it; the other types are not a teardown.
            raise BadRequest("CBC.0100", "unsubscribe_type")
        fails: list[dict[str, Any]] = []
        accepted: list[str] = []
        orders: set[str] = set()
        with self.state.lock:
            self.machine.settle()
            for resource_id in resource_ids:
                job = self._by_resource(resource_id)
                code, message = self._refusal(job, resource_id, lang)
                if job is not None:
                    orders.add(job.order_id)
                if code is None and job is not None:
                    self.machine.release_after_unsubscribe(job)
                    accepted.append(job.order_id)
                else:
                    fails.append({"resource_id": resource_id, "error_code": code, "error_msg": message})
            self.state.ledger.bss({"call": "unsubscribe", "order_ids": sorted(o for o in orders if o),
                                   "resource_ids": list(resource_ids), "refused": [f["resource_id"] for f in fails],
                                   "at": self.state.clock.now().isoformat()})
        body: dict[str, Any] = {"order_ids": [f"{o}U" for o in accepted if o]}
        if fails:
            body["fail_resource_infos"] = fails
        return 200, body

    def _refusal(self, job: Job | None, resource_id: str, lang: str) -> tuple[str | None, str]:
        """(code, message) when BSS refuses to unsubscribe this resource, (None, "") when it accepts."""
        code: str | None = None
        message = ""
        if job is None:
            self.state.violate("unsubscribe_unknown_resource", None, resource_id)
            code = "CBC.30000010"
        elif job.unsubscribed or not job.order_active:
            self.state.violate("repeated_unsubscribe", job.id, resource_id)
            code = "CBC.30000067"
        elif job.id in self.refusals:
            scripted = self.refusals[job.id]
            code, message = str(scripted[0]), str(scripted[1])
            scripted[2] -= 1
            if scripted[2] <= 0:
                del self.refusals[job.id]
        elif self.state.rng.random() < self.state.profile.unsubscribe_refuse_rate:
            code = "CBC.30000054"
        if code is None:
            return None, ""
        return code, message or bss_message(code if code in _KNOWN else "CBC.30000054", lang)

    # -- the operator in the console ----------------------------------------------------------------------

    def operator_unsubscribe(self, job_id: str) -> str:
        """An operator unsubscribes the order in the console: the task starts releasing now."""
        with self.state.lock:
            self.machine.settle()
            job = self.state.jobs.get(job_id)
            if job is None or job.status == "DELETED":
                raise KeyError(job_id)
            if not job.is_period():
                raise ValueError(f"{job_id} has no active yearly/monthly order")
            job.order_active, job.unsubscribed = False, True
            if self.state.profile.unsubscribed_order == "canceled":
                job.period_order["status"] = "CANCELED"
            if job.status in STOPPABLE or job.status == RELEASE_FAILED:
                self.machine.enter(job, "RELEASE_RESOURCE_STARTED", self.state.mono(), force=True)
            return job.status
