"""Recording a run: the run row, its tasks (one per planned item) and their first audit records.

Two orders, chosen in one place (`records_before_planning`): with a store that can add tasks to a recorded run
(`Store.add_tasks`), the run is recorded before planning starts (status "planning"), so a kill at any moment
is resumable; otherwise the run and its tasks are recorded together once the plan is made.

A run recorded before planning is a bare row (selection, options, consent) until its selection is known: its
trail opens (`open_run`: the `run_recorded` record) once something was selected, and a selection that matched
nothing removes the bare row (`discard_run`), so an empty match records no run. Its chain starts at
GENESIS(run_id) whenever its first record is written.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.engine import Tuning
from orchestrator.engine.feed import UNPLANNED, unplanned_targets
from orchestrator.errors import RunTimedOut
from orchestrator.lifecycle import TERMINAL, Lifecycle, TaskModel, TaskState
from orchestrator.planning import Action, Plan, PlanItem
from orchestrator.store.repo import Context, Event, Store
from orchestrator.store.schema import Run, Task

PLANNING = "planning"
RECORDED_BEFORE_PLANNING = "recorded_before_planning"  # in Run.options: its plan may not be (fully) recorded


def needs_planning(run: Run) -> bool:
    """A run recorded before planning whose plan was never recorded (killed or stopped while planning), or
    one with targets whose planning failed."""
    return (bool(run.options.get(RECORDED_BEFORE_PLANNING)) and run.plan_hash is None) \
        or bool(unplanned_targets(run.options))


def note_unplanned(store: Store, run_id: str, ctx: Context, now: datetime, failed: Mapping[str, str],
                   *, planned: Sequence[str] = ()) -> None:
    """Record which targets could not be planned (and why), and that `planned` ones now are: the run stays
    unfinished until `resume` plans them (the exit code says so meanwhile)."""
    run = store.run(run_id)
    if run is None or (not failed and not planned):
        return
    left = {k: v for k, v in {**unplanned_targets(run.options), **failed}.items() if k not in planned or k in failed}
    store.set_run(run_id, options={**{k: v for k, v in run.options.items() if k != UNPLANNED},
                                   **({UNPLANNED: left} if left else {})})
    events = [Event(trigger="target_failed", detail=f"target {label}: {why}; `drs-teardown resume` plans it "
                    "again") for label, why in failed.items()]
    events += [Event(trigger="target_planned", detail=f"target {label}: planned") for label in planned
               if label not in failed and label in unplanned_targets(run.options)]
    if events:
        store.append_events(run_id, ctx, events, now)


def records_before_planning(store: Store) -> bool:
    """True when the store can record a run first and add its tasks as planning finds them."""
    return callable(getattr(store, "add_tasks", None))


def new_run(run_id: str, ctx: Context, tuning: Tuning, now: datetime, *, project_id: str, endpoint: str,
            selection: Mapping[str, Any], consent: str, plan_hash: str | None, status: str,
            options: Mapping[str, Any] | None = None) -> Run:
    return Run(id=run_id, created_at=now, finished_at=None, status=status, project_id=project_id,
               endpoint=endpoint, selection=dict(selection), options={**tuning.to_dict(), **(options or {})},
               actor=ctx.actor, ticket=ctx.ticket, reason=ctx.reason, consent=consent, plan_hash=plan_hash,
               exit_code=None, head_hash="")


def task_rows(run_id: str, items: Sequence[PlanItem], now: datetime, targets: Mapping[str, str] | None = None,
              *, read_at: datetime | None = None) -> tuple[list[dict[str, Any]], list[Event]]:
    """Task column dicts (pending / skipped / blocked per the plan) and their `plan` records. `read_at`: when
    the plan read the statuses (its start), if earlier than now: a first stop or delete goes out only on a reading
    at most about one poll interval old, so a plan confirmed or reviewed later is read again first."""
    observed = now if read_at is None else min(now, read_at)
    lifecycle = Lifecycle()
    with_target = "target" in Task.__table__.columns  # a store that records each task's target
    tasks: list[dict[str, Any]] = []
    events: list[Event] = []
    for item in items:
        model = TaskModel(item.job_id, last_status=item.status)
        events.append(Event(trigger="plan", job_id=item.job_id, to_state=TaskState.PENDING.value,
                            remote_status=item.status, detail=f"{item.action.value}: {item.reason}"))
        if item.action is Action.SKIP:
            events.append(Event.of(lifecycle.fire(model, "skip"), detail=item.reason))
        elif item.action is Action.BLOCK:
            # An id the service refused itself (DRS.M00202) ends failed with that code; anything else blocked.
            events.append(Event.of(lifecycle.fire(model, "fail" if item.error_code else "block"), detail=item.reason,
                                   error_code=item.error_code))
        row = {"run_id": run_id, "job_id": item.job_id, "name": item.name, "db_use_type": item.db_use_type,
               "engine_type": item.engine_type, "parent_job_id": item.parent_job_id,
               "order_id": item.order_id, "planned_action": item.action.value, "plan_status": item.status,
               "state": model.state, "last_status": item.status, "last_observed_at": observed,
               "reason": item.reason if model.state in TERMINAL else None, "error_code": item.error_code,
               "stop_attempts": 0, "forced": False, "busy_retries": 0, "resends": 0,
               "phase_started_at": now, "next_check_at": now, "unchanged_polls": 0, "lease_owner": None,
               "lease_expires_at": None, "updated_at": now}
        if with_target and targets:
            row["target"] = targets.get(item.job_id)
        tasks.append(row)
    return tasks, events


def start_event(plan: Plan, consent: str) -> Event:
    return Event(trigger="run_started", detail=f"consent={consent}; plan={plan.hash}; "
                 f"targets={len(plan.items)}; counts={plan.counts()}")


def start_run(store: Store, plan: Plan, ctx: Context, tuning: Tuning, now: datetime, *, consent: str,
              plan_hash: str | None = None, selection: Mapping[str, Any] | None = None,
              options: Mapping[str, Any] | None = None, targets: Mapping[str, str] | None = None) -> str:
    """Record a run with its tasks and their first records in one step; returns the run id."""
    run_id = uuid.uuid4().hex
    run = new_run(run_id, ctx, tuning, now, project_id=plan.project_id, endpoint=plan.endpoint,
                  selection=selection or plan.selection.to_dict(), consent=consent, plan_hash=plan_hash,
                  status="running", options=options)
    tasks, events = task_rows(run_id, plan.items, now, targets, read_at=plan.created_at)
    store.create_run(run, tasks, ctx, [start_event(plan, consent), *events], now)
    return run_id


def begin_run(store: Store, ctx: Context, tuning: Tuning, now: datetime, *, project_id: str, endpoint: str,
              selection: Mapping[str, Any], consent: str, options: Mapping[str, Any] | None = None) -> str:
    """Record a run before planning (status "planning"): selection, options and consent, no tasks yet."""
    run_id = uuid.uuid4().hex
    run = new_run(run_id, ctx, tuning, now, project_id=project_id, endpoint=endpoint, selection=selection,
                  consent=consent, plan_hash=None, status=PLANNING,
                  options={**(options or {}), RECORDED_BEFORE_PLANNING: True})
    store.create_run(run, [], ctx, [], now)  # a bare row: its trail opens once the selection is known non-empty
    return run_id


def recorded_event(consent: str | None, note: str = "") -> Event:
    return Event(trigger="run_recorded", detail=f"consent={consent}; planning{note}")


def open_run(store: Store, run_id: str, ctx: Context, now: datetime, consent: str | None) -> None:
    """The selection of a run recorded before planning is known and not empty: its trail opens."""
    store.append_events(run_id, ctx, [recorded_event(consent)], now)


def discard_run(store: Store, run_id: str) -> bool:
    """Remove a bare run whose selection matched nothing (no run recorded for an empty match); False when the
    store cannot or the run is no longer bare (it then stays, and is finished as any other)."""
    discard = getattr(store, "discard_run", None)
    return bool(discard is not None and discard(run_id))


def opening_for_resume(store: Store, run: Run) -> list[Event]:
    """A run recorded before planning whose trail never opened (its process died while listing): its
    `run_recorded` record is written when it is continued (before `run_resumed`)."""
    if run.options.get(RECORDED_BEFORE_PLANNING) and run.plan_hash is None \
            and not store.findings(run.id, "run_recorded"):
        return [recorded_event(run.consent, "; its process ended before the selection was known")]
    return []


def add_plan(store: Store, run_id: str, plan: Plan, ctx: Context, now: datetime, *, consent: str,
             targets: Mapping[str, str] | None = None, plan_hash: str | None = None) -> None:
    """Add the tasks a plan found to a run recorded before planning (only those not recorded yet). `plan_hash`:
    the run's recorded hash, kept when this plan only completes it (targets planned again on resume)."""
    known = set(store.job_states(run_id))
    items = [i for i in plan.items if i.job_id not in known]
    tasks, events = task_rows(run_id, items, now, targets, read_at=plan.created_at)
    store.add_tasks(run_id, tasks, ctx, [start_event(plan, consent), *events], now)  # type: ignore[attr-defined]
    store.set_run(run_id, status="running", plan_hash=plan_hash or plan.hash)


def timed_out_planning(store: Store | None, run_id: str | None, ctx: Context | None, now: datetime,
                       timeout: float, exc: BaseException) -> BaseException:
    """The command's --timeout passed while the run was being planned: the run is left interrupted (`resume`
    plans what was never recorded, with a fresh budget) and the command ends with exit 3, naming the cause (the
    URL and what went wrong). Without a recorded run, the failure itself."""
    if store is None or run_id is None or ctx is None:
        return exc  # no run recorded: nothing to resume, the failure as it is
    why = f"run timeout ({timeout:g}s) passed while planning: {getattr(exc, 'message', None) or exc}"
    with contextlib.suppress(Exception):
        store.set_run(run_id, status="interrupted")
        store.append_events(run_id, ctx, [Event(trigger="run_interrupted", detail=why)], now)
    return RunTimedOut(f"{why}; run {run_id} is resumable: drs-teardown resume {run_id}", run_id=run_id)
