"""Recording a run: who acts, and the run with its planned tasks. (Moving to the use-case layer.)"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from orchestrator.engine.tuning import Tuning
from orchestrator.lifecycle import TERMINAL, Lifecycle, TaskModel
from orchestrator.lifecycle import TaskState as S
from orchestrator.planning import Action, Plan
from orchestrator.store.models import Run
from orchestrator.store.repo import Context, Event, Store
from orchestrator.version import __version__


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
