"""Scripted trails for the report tests: a few tasks with exactly the records the engine writes (escalations,
busy answers, dropped connections, --no-force, an interruption and its resume), written through the Store."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from reportkit import ACTOR, T0
from sqlalchemy import update

from orchestrator.lifecycle import TERMINAL, TaskState
from orchestrator.store.repo import Context, Event, Store
from orchestrator.store.schema import ApiCall, Run, Task

# -- scripted runs: a few tasks with exactly the records the engine writes ------------------------------------


@dataclass(frozen=True)
class Step:
    """One record of a task's script: `at` seconds after the run's start."""

    at: float
    trigger: str
    to: TaskState
    remote: str | None = None
    detail: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class RunEvent:
    """A run-level record (run_interrupted, run_resumed, ...) written by `ctx`."""

    at: float
    trigger: str
    ctx: Context
    detail: str | None = None
    outcome: str | None = None


ALICE = Context(actor=ACTOR, worker="ops-bastion-1:4242:abcdef", ticket="CHG-7", reason="decommission")
BOB = Context(actor={**ACTOR, "os_user": "bob", "host": "ops-bastion-2"}, worker="ops-bastion-2:777:fedcba",
              ticket="CHG-7", reason="decommission")

_TERMINATE = "terminate: INCRE_TRANSFER_STARTED must be stopped first"
_BUSY = ("stop refused: DRS.M01504 Another operation is being performed on the migration task or the "
         "migration task is abnormal. Try again later.")


def _release_and_delete(at: float) -> list[Step]:
    return [Step(at, "released", TaskState.DELETABLE, "RELEASE_RESOURCE_COMPLETE",
                 "RELEASE_RESOURCE_COMPLETE observed"),
            Step(at + 1, "delete", TaskState.DELETING, "RELEASE_RESOURCE_COMPLETE",
                 "delete: RELEASE_RESOURCE_COMPLETE is deletable"),
            Step(at + 2, "deleted", TaskState.DELETED, "RELEASE_RESOURCE_COMPLETE", "delete accepted")]


def _stop(at: float, detail: str = _TERMINATE, remote: str = "INCRE_TRANSFER_STARTED") -> list[Step]:
    return [Step(at, "stop", TaskState.STOPPING, remote, detail),
            Step(at + 0.5, "stop_accepted", TaskState.RELEASING, "RELEASE_RESOURCE_STARTED", "stop accepted")]


RRF = "RELEASE_RESOURCE_FAILED"
ESCALATED_SCRIPTS: dict[str, tuple[str, str, list[Step]]] = {
    "escalated-mysql": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        *_stop(1), *_stop(10, f"{RRF} after 1 terminate(s): terminate again (attempt 2)", RRF),
        *_stop(20, f"{RRF} after 2 terminate(s): escalating to force_terminate (attempt 3)", RRF),
        *_release_and_delete(40)]),
    "busy-then-fine": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        Step(1, "stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", _TERMINATE),
        Step(1.5, "requeue", TaskState.PENDING, "INCRE_TRANSFER_STARTED", _BUSY, "DRS.M01504"),
        *_stop(6), *_release_and_delete(30)]),
    "dropped-connection": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        Step(1, "stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", _TERMINATE),
        Step(1.5, "outcome_unknown", TaskState.STOPPING, "INCRE_TRANSFER_STARTED",
             "stop outcome unknown: batch-jobs: no answer after sending (RemoteProtocolError); reading the status "
             "first", "RemoteProtocolError"),
        Step(3, "stop_accepted", TaskState.RELEASING, "RELEASE_RESOURCE_STARTED",
             "RELEASE_RESOURCE_STARTED: the stop is taking effect"),
        *_release_and_delete(25)]),
    "server-error": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        Step(1, "stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", _TERMINATE),
        Step(1.5, "outcome_unknown", TaskState.STOPPING, "INCRE_TRANSFER_STARTED",
             "stop outcome unknown: batch-jobs: 500 DRS.M00004 Service is abnormal; reading the status first",
             "DRS.M00004"),
        *_stop(4), *_release_and_delete(28)]),
    "no-force-allowed": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        *_stop(1), *_stop(10, f"{RRF} after 1 terminate(s): terminate again (attempt 2)", RRF),
        Step(20, "fail", TaskState.FAILED, RRF, f"{RRF} after 2 terminate(s); --no-force forbids force_terminate")]),
    "prepaid-order": ("block", "INCRE_TRANSFER_STARTED", [
        Step(0, "block", TaskState.BLOCKED, "INCRE_TRANSFER_STARTED",
             "yearly/monthly order CS75E96B37DF237D: unsubscribe the order first, then re-run")]),
}


def scripted_run(store: Store, scripts: dict[str, tuple[str, str, list[Step]]], *,
                 events: Sequence[RunEvent] = (), calls: Sequence[dict[str, Any]] = (),
                 finished_at: float | None = None, run_id: str = "scripted" + "0" * 24,
                 ctx: Context = ALICE) -> str:
    """A run whose tasks follow `scripts` (name -> planned action, plan status, steps), written through the Store
    in time order, one transaction per instant, as the engine commits; run events interleaved."""
    run = Run(id=run_id, created_at=T0, finished_at=None, status="running", project_id="0" * 32,
              endpoint="https://drs.example.invalid", selection={"all": True}, options={}, actor=ctx.actor,
              ticket=ctx.ticket, reason=ctx.reason, consent="yes-flag", plan_hash=None, exit_code=None,
              head_hash="")
    ids = {name: f"{i:08x}-1111-4000-8000-{i:012x}" for i, name in enumerate(scripts)}
    tasks, first = [], [Event(trigger="run_started", detail=f"consent=yes-flag; targets={len(scripts)}")]
    for name, (action, status, _) in scripts.items():
        tasks.append(dict(run_id=run_id, job_id=ids[name], name=name, planned_action=action, plan_status=status,
                          state=TaskState.PENDING, last_status=status, stop_attempts=0, forced=False,
                          busy_retries=0, resends=0, unchanged_polls=0, updated_at=T0))
        first.append(Event(trigger="plan", job_id=ids[name], to_state="pending", remote_status=status,
                           detail=f"{action}: planned"))
    store.create_run(run, tasks, ctx, first, T0)
    timeline: list[tuple[float, int, Context, Event]] = []
    resumes = sorted((e.at, e.ctx) for e in events if e.trigger == "run_resumed")

    def writer(at: float) -> Context:  # after a resume, the resuming worker writes
        return next((who for when, who in reversed(resumes) if when <= at), ctx)

    for name, (_, _, steps) in scripts.items():
        state = TaskState.PENDING
        for step in steps:
            outcome = step.to.value if step.to in TERMINAL else None
            timeline.append((step.at, 1, writer(step.at), Event(
                trigger=step.trigger, job_id=ids[name], from_state=state.value, to_state=step.to.value,
                remote_status=step.remote, outcome=outcome, error_code=step.error_code, detail=step.detail)))
            state = step.to
    for e in events:
        timeline.append((e.at, 0, e.ctx, Event(trigger=e.trigger, detail=e.detail, outcome=e.outcome)))
    timeline.sort(key=lambda x: (x[0], x[1], x[2].worker))
    for (at, _, who), group in itertools.groupby(timeline, key=lambda x: (x[0], x[1], x[2])):
        store.append_events(run_id, who, [ev for *_, ev in group], T0 + timedelta(seconds=at))
    with store.session() as s:
        for name, (_, _, steps) in scripts.items():
            last = steps[-1]
            codes = [st.error_code for st in steps if st.error_code]
            s.execute(update(Task).where(Task.run_id == run_id, Task.job_id == ids[name]).values(
                state=last.to, last_status=last.remote, reason=last.detail,
                error_code=codes[-1] if codes else None))
        for call in calls:
            s.add(ApiCall(**{"run_id": run_id, "at": T0, "worker": ctx.worker, "method": "DELETE",
                             "path": "/v3/0/jobs/batch-jobs", "request_id": None, "duration_ms": 10.0,
                             "job_ids": "", "error_code": None, "attempt": 1, **call}))
    if finished_at is not None:
        end = T0 + timedelta(seconds=finished_at)
        store.append_events(run_id, writer(finished_at), [Event(trigger="run_finished", outcome="3")], end)
        store.set_run(run_id, status="finished", finished_at=end, exit_code=3)
    return run_id


ROUGH_CALLS: tuple[dict[str, Any], ...] = (
    {"api": "batch-jobs", "http_status": 202},
    {"api": "batch-jobs", "http_status": 202},
    {"api": "batch-jobs", "http_status": None, "error_code": "RemoteProtocolError"},
    {"api": "batch-status", "method": "POST", "http_status": 500, "error_code": "DRS.M00004"},
    {"api": "batch-status", "method": "POST", "http_status": 200, "attempt": 2},
    {"api": "batch-status", "method": "POST", "http_status": 429, "error_code": "APIGW.0308"},
)


def escalated_run(store: Store) -> str:
    """Five tasks: an escalation to force_terminate, a busy answer, a dropped connection, --no-force, a block."""
    return scripted_run(store, ESCALATED_SCRIPTS, calls=ROUGH_CALLS, finished_at=45, run_id="escalated" + "0" * 23)


def interrupted_run(store: Store, *, resumed_record: bool = True) -> str:
    """Six tasks: alice's worker is interrupted at t=20 with four in flight; bob resumes at t=620 and finishes."""
    scripts: dict[str, tuple[str, str, list[Step]]] = {}
    for i in range(6):
        if i < 2:  # done before the interruption
            steps = [*_stop(1 + i), *_release_and_delete(8 + i)]
        else:  # releasing across the gap; read again and finished after the resume
            steps = [*_stop(2 + i), *_release_and_delete(625 + i)]
        scripts[f"resumable-{i}"] = ("stop_then_delete", "INCRE_TRANSFER_STARTED", steps)
    events = [RunEvent(20, "run_interrupted", ALICE, "4 task(s) pending; resumable with `drs-teardown resume`")]
    if resumed_record:
        events.append(RunEvent(620, "run_resumed", BOB, "resumed by bob@ops-bastion-2 (4 task(s) pending)"))
    rid = "resumed" if resumed_record else "killed"
    return scripted_run(store, scripts, events=events, finished_at=640, run_id=rid + "0" * (32 - len(rid)))
