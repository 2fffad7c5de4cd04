"""`resume` re-opens the tasks of a run that ran out of time (`timed_out`), before the engine works it.

Each goes back, through the audited `resume_timed_out` transition, to the state it timed out in (read from its
`time_out` record), with a new phase budget and no reading carried over: the engine reads it before sending
anything, and that state's rules decide (engine/decide.py `on_resume`). Nothing is sent here.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.engine.decide import Tracked, on_resume
from orchestrator.lifecycle import REOPENABLE, Lifecycle, TaskModel
from orchestrator.store.repo import Change, Context, Event, Store


def timed_out_ids(store: Store, run_id: str) -> list[str]:
    """The run's tasks that `resume` would re-open."""
    return sorted(j for j, (state, _) in store.job_states(run_id).items() if state in REOPENABLE)


def reopen_timed_out(store: Store, run_id: str, ctx: Context, now: datetime) -> list[str]:
    """Re-open every `timed_out` task of the run in one transaction (rows and `resume_timed_out` records);
    returns their ids. A task whose `time_out` record is not found stays timed out (fail closed)."""
    rows = [r for r in store.tasks(run_id) if r.state in REOPENABLE]
    if not rows:
        return []
    where = store.timed_out_in(run_id)
    lifecycle = Lifecycle()
    changes: list[Change] = []
    for r in rows:
        model = TaskModel(r.job_id, r.state, r.last_status, r.order_id, timed_out_in=where.get(r.job_id))
        t = Tracked(model=model, planned_action=r.planned_action, phase_started=r.phase_started_at or now,
                    next_check=now, reason=r.reason)
        d = on_resume(t, model.timed_out_in, now)
        if d is None or d.trigger is None:
            continue
        step = lifecycle.fire(model, d.trigger)
        changes.append(Change(r.job_id, {"state": model.state, "reason": d.reason, "phase_started_at": now,
                                         "next_check_at": now, "unchanged_polls": 0, "lease_owner": None,
                                         "lease_expires_at": None},
                              Event.of(step, detail=d.reason)))
    if changes:
        store.apply(run_id, ctx, changes, [], now)
    return [c.job_id for c in changes]
