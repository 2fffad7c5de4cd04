"""A simulated task: its record, the spec used to add one, and its wire representations (list row, detail)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from orchestrator.drs.codes import ALL_STATUSES, DELETABLE, RELEASE_FAILED, STOPPABLE, WAIT

DB_USE_TYPES: tuple[str, ...] = ("migration", "sync", "cloudDataGuard")
CHINA_TZ = timezone(timedelta(hours=8))

# Every value job_action may hold (reference/drs-api.md §6).
ALL_ACTIONS: tuple[str, ...] = (
    "CREATE",
    "CHOOSE_OBJECT",
    "PRE_CHECK",
    "CHANGE_MODE",
    "FREE_RESOURCE",
    "MODIFY_DB_CONFIG",
    "RESET_DB_PWD",
    "MODIFY_CONFIGURATION",
    "PAUSE",
    "START",
    "CHANGE",
    "RETRY",
    "RESET",
    "DELETE",
    "QUERY_PRE_CHECK",
    "SWITCH_OVER",
    "START_INCR",
    "MODIFY_TASK_NUMBER",
    "CONTINUE_JOB",
    "STOP_JOB",
    "CONTINUE_CAPTURE",
    "STOP_CAPTURE",
    "CONTINUE_APPLY",
    "STOP_APPLY",
    "PAY_ORDER",
    "UNSUBSCRIBE",
    "TO_PERIOD",
    "TO_RENEW",
    "ORDER_INFO",
    "CHANGE_FLAVOR",
    "CLONE",
)
_STATUS_ACTIONS: dict[str, tuple[str, ...]] = {
    "CONFIGURATION": ("CHOOSE_OBJECT", "PRE_CHECK", "MODIFY_CONFIGURATION"),
    "WAITING_FOR_START": ("MODIFY_CONFIGURATION",),
    "PAUSING": ("START", "CONTINUE_JOB"),
    "FULL_TRANSFER_STARTED": ("PAUSE", "STOP_JOB"),
    "INCRE_TRANSFER_STARTED": ("PAUSE", "STOP_JOB", "MODIFY_TASK_NUMBER", "CHANGE_FLAVOR"),
    "FULL_TRANSFER_COMPLETE": ("START_INCR",),
    "CHILD_TRANSFER_STARTED": ("PAUSE",),
}


class Kind(enum.Enum):
    """How a task relates to others."""

    SINGLE = "single"
    DUAL_PARENT = "dual_parent"  # dual-active DR parent (multi_write): only it may be called
    DUAL_CHILD = "dual_child"  # its status follows the parent's
    REEDIT_CHILD = "reedit_child"  # re-edited sync sub-task: CHILD_TRANSFER_* statuses


@dataclass(frozen=True)
class JobSpec:
    """What to add to the world: one task (and its children) in a given status."""

    status: str = "INCRE_TRANSFER_STARTED"
    db_use_type: str = "sync"
    engine_type: str = "mysql"
    name: str | None = None
    period_order_id: str | None = None
    multi_write: bool = False
    # multi_write: dual-active children (their status follows the parent); otherwise re-edit sync children.
    children: int = 0
    release_fails: bool = False  # every plain terminate ends RELEASE_RESOURCE_FAILED
    never_releases: bool = False  # stays RELEASE_RESOURCE_STARTED forever once stopped
    busy_times: int = 0  # the next N batch-jobs items on it fail DRS.M01504
    child_status: str = "CHILD_TRANSFER_STARTED"
    task_type: str = "FULL_INCR_TRANS"
    tags: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def validate(self) -> None:
        """Refuse combinations the real service cannot have."""
        if self.status not in ALL_STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid: {', '.join(ALL_STATUSES)}")
        if self.child_status not in ALL_STATUSES:
            raise ValueError(f"unknown child status {self.child_status!r}; valid: {', '.join(ALL_STATUSES)}")
        if self.db_use_type not in DB_USE_TYPES:
            raise ValueError(f"db_use_type must be one of {DB_USE_TYPES}")
        if self.period_order_id and self.db_use_type == "migration":
            raise ValueError("migration tasks cannot be yearly/monthly")
        if self.multi_write and self.db_use_type != "cloudDataGuard":
            raise ValueError("only cloudDataGuard tasks can be dual-active (multi_write)")
        if self.children and not self.multi_write and self.db_use_type != "sync":
            raise ValueError("re-edit children exist only under sync tasks")
        if self.children < 0 or self.busy_times < 0:
            raise ValueError("children and busy_times must be >= 0")


@dataclass
class Job:
    """The simulator's record of one task; times are the clock's monotonic seconds."""

    id: str
    name: str
    db_use_type: str
    engine_type: str
    status: str
    created_mono: float
    updated_mono: float
    kind: Kind = Kind.SINGLE
    task_type: str = "FULL_INCR_TRANS"
    job_direction: str = "up"
    net_type: str = "vpc"
    description: str = ""
    parent_id: str | None = None
    child_ids: list[str] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    period_order: dict[str, Any] = field(default_factory=dict)
    order_active: bool = False
    busy_times: int = 0
    release_fails: bool = False
    never_releases: bool = False
    gtid: str = ""
    incre_start_position: str = ""
    error_message: str = ""
    # The next automatic transition (monotonic time, status), set whenever a transitional status is entered.
    next_at: float | None = None
    next_status: str | None = None
    purge_at: float | None = None
    enterprise_project_id: str = "0"
    inst_ip: str = "192.168.0.10"
    # Statuses entered, oldest first (a stale read serves the one before the current).
    history: list[str] = field(default_factory=list)
    # A scripted or random change happened since the task was last served in a read answer: the first refusal
    # it causes is the world's doing, not the client's (counted in drift_refusals, not as a violation).
    drift_pending: bool = False
    # The order a gain_order drift added has not been shown in a detail answer yet (a status answer does not show
    # period_order): the first refusal because of it is the world's doing too.
    order_unseen: bool = False
    # The BSS resource the yearly/monthly order bills (not the job id, reference §3).
    resource_id: str = ""
    order_id: str = ""  # the order it was billed under; kept after period_order is cleared
    unsubscribed: bool = False  # BSS accepted the unsubscribe; the task releases itself

    def is_period(self) -> bool:
        """A yearly/monthly task whose order has not been unsubscribed."""
        return bool(self.period_order.get("order_id")) and self.order_active

    def is_releasing_after_unsubscribe(self) -> bool:
        """Unsubscribed, not yet released: terminate and delete stay refused until RELEASE_RESOURCE_COMPLETE."""
        return self.unsubscribed and self.status not in DELETABLE and self.status != "DELETED"


def list_time(when: datetime) -> str:
    """The list API's create_time: 'YYYY-MM-DD HH:MM:SS' in UTC+8."""
    return when.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def epoch_ms(when: datetime) -> str:
    """Detail timestamps: epoch milliseconds as a string."""
    return str(int(when.timestamp() * 1000))


def job_action(job: Job) -> dict[str, Any]:
    """available/unavailable actions for the list API (informative: the simulator enforces its own rules)."""
    available: list[str] = []
    if job.status in DELETABLE:
        available += ["DELETE", "CLONE"]
        if job.status == "CREATE_FAILED":
            available.append("RETRY")
    elif job.status in STOPPABLE or job.status == RELEASE_FAILED:
        available += ["FREE_RESOURCE", "CLONE", *_STATUS_ACTIONS.get(job.status, ())]
        if job.status.endswith("_FAILED"):
            available += ["RETRY", "RESET"]
        if job.db_use_type == "cloudDataGuard" and job.status == "INCRE_TRANSFER_STARTED":
            available.append("SWITCH_OVER")
    if job.is_period():
        available = [a for a in available if a not in ("FREE_RESOURCE", "DELETE")]
        available += ["UNSUBSCRIBE", "ORDER_INFO", "TO_RENEW"]
    elif job.status not in WAIT and job.status not in DELETABLE and job.db_use_type != "migration":
        available.append("TO_PERIOD")
    chosen = [a for a in ALL_ACTIONS if a in set(available)]
    return {
        "available_actions": chosen,
        "unavailable_actions": [a for a in ALL_ACTIONS if a not in set(chosen)],
        "current_action": "",
    }


def billing(job: Job) -> bool:
    """billing_tag: the task currently costs money."""
    return job.status not in DELETABLE and job.status not in ("DELETED", "CREATING")


def list_row(job: Job, created: datetime) -> dict[str, Any]:
    """A JobInfo / ChildrenJobInfo row of the list API (children added by the caller)."""
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "description": job.description,
        "create_time": list_time(created),
        "engine_type": job.engine_type,
        "net_type": job.net_type,
        "billing_tag": billing(job),
        "job_direction": job.job_direction,
        "db_use_type": job.db_use_type,
        "task_type": job.task_type,
        "node_newFramework": True,
        "job_action": job_action(job),
    }


def detail(job: Job, created: datetime, updated: datetime) -> dict[str, Any]:
    """The QueryJobResp fields that matter for teardown (reference/drs-api.md §5)."""
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "description": job.description,
        "create_time": epoch_ms(created),
        "update_time": epoch_ms(updated),
        "db_use_type": job.db_use_type,
        "engine_type": job.engine_type,
        "task_type": job.task_type,
        "job_direction": job.job_direction,
        "original_job_direction": job.job_direction,
        "job_kernel_direction": job.job_direction,
        "net_type": job.net_type,
        "node_num": 2 if job.kind is Kind.DUAL_PARENT else 1,
        "is_multi_az": False,
        "multi_write": job.kind in (Kind.DUAL_PARENT, Kind.DUAL_CHILD),
        "period_order": dict(job.period_order),
        # Only children whose EIP binding failed (FailedToBindEipChildInfo), never the general child list.
        "children": [],
        "tags": [dict(t) for t in job.tags],
        "gtid": job.gtid,
        "incre_start_position": job.incre_start_position,
        "error_code": "",
        "error_message": job.error_message,
        "failed_reason": job.error_message,
        "inst_info": {
            "engine_type": job.engine_type,
            "inst_type": "high",
            "ip": job.inst_ip,
            "public_ip": "",
            "start_time": epoch_ms(created),
            "status": "deleted"
            if job.status in ("DELETED", "RELEASE_RESOURCE_COMPLETE", "RELEASE_CHILD_TRANSFER_COMPLETE")
            else "active",
            "volume_size": 100,
        },
    }
    if job.parent_id:
        out["parent_id"] = job.parent_id
        if job.kind is Kind.DUAL_CHILD:
            out["master_job_id"] = job.parent_id
    return out
