"""The engine's rules as a pure core: (a task as the loop sees it, what just happened, now, tuning) -> a Decision.

No store, client, clock or asyncio here. The loop (engine/loop.py) applies a Decision to its `Tracked` task,
fires the lifecycle trigger it names, commits the change with its audit record, and does the I/O. Every rule
of when to re-read, when to act, when to give up lives in this module and is tested as tables
(tests/engine/test_decide.py), the way `planning.decide` is.

The rules, in short:
- Reads are safe to repeat: an unreadable, unknown or error answer about a task is read again with backoff; only
  MAX_BAD_READS of them in a row block it, and the reason then says what was last reliably seen.
- Act on fresh readings only: a first stop or delete goes out on a reading at most `tuning.fresh_for` old.
- A refusal is never repeated blindly: it is followed by a fresh detail read (status and period_order).
- A destructive call whose outcome is unknown is reconciled by reading, and re-sent at most MAX_RESENDS times.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.drs.codes import (
    CHILD_CODES,
    RELEASE_FAILED,
    ErrorClass,
    StatusClass,
    classify,
    classify_code,
    reads_gone,
)
from orchestrator.engine.tuning import MAX_BAD_READS, MAX_REJECTIONS, MAX_RESENDS, Tuning
from orchestrator.lifecycle import ACTIVE, RESUME_TIMED_OUT, TaskModel, TaskState


@dataclass
class Tracked:
    """A task as the loop sees it: the lifecycle model plus scheduling and counters."""

    model: TaskModel
    planned_action: str
    phase_started: datetime
    next_check: datetime
    observe: bool = True  # the next step is reading its status
    detail_read: bool = False  # ...with batch-detail (status and period_order), after a refusal
    stop_attempts: int = 0
    forced: bool = False
    busy_retries: int = 0
    rejections: int = 0
    resends: int = 0
    unchanged_polls: int = 0
    bad_reads: int = 0
    solo: bool = False  # send alone: a whole batch was refused, find which task it was
    confirming: bool = False  # stopped yet reading as running: one more reading before stopping again
    breakpoint_read: bool = False  # --record-breakpoint: gtid / incre_start_position read before the delete
    delete_sent: bool = False  # a delete of ours went out (its answer may have been lost): gone is our doing
    gtid: str | None = None
    incre_start_position: str | None = None
    reason: str | None = None
    error_code: str | None = None
    since: datetime | None = None  # when the last transition happened: the oldest waiters are polled first
    observed_at: datetime | None = None  # when the last reliable reading was taken
    delete_phase: bool = False  # a busy delete goes back through `pending` without restarting the phase
    order_id: str | None = None
    parent_job_id: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        self.delete_phase = self.delete_phase or self.model.state in (TaskState.DELETABLE, TaskState.DELETING)

    @property
    def job_id(self) -> str:
        return self.model.job_id

    @property
    def state(self) -> TaskState:
        return self.model.state

    @property
    def last_status(self) -> str | None:
        return self.model.last_status


@dataclass(frozen=True)
class Reading:
    """One task's answer from batch-status or batch-detail."""

    status: str | None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    order_id: str | None = None
    detail: bool = False  # from batch-detail: order_id is meaningful


@dataclass(frozen=True)
class Answer:
    """One task's item in a batch-jobs answer (None status: the answer did not list it)."""

    status: str | None  # "success" | "failed" | None
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Failure:
    """A whole batch-jobs call that failed, as the engine tells it apart."""

    kind: str  # "auth" | "not_sent" | "rejected" | "unknown"
    message: str
    code: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with one task: a trigger to fire (or none), why, and the task's new field values."""

    trigger: str | None = None
    reason: str | None = None
    error_code: str | None = None
    request_id: str | None = None
    event: str | None = None  # an audit record without a transition ("outcome_unknown")
    updates: Mapping[str, Any] = field(default_factory=dict)  # new values of Tracked fields
    persist: bool = True  # write the task's row even without a trigger
    abort: str | None = None  # the run cannot go on (credentials refused): stop, resumable
    values: Mapping[str, Any] | None = None  # structured facts for the audit record (a breakpoint)


NOTHING = Decision(persist=False)


def backoff(tuning: Tuning, attempts: int, rng: random.Random) -> float:
    """Full jitter in the upper half, capped by the longest poll interval."""
    cap = min(tuning.max_poll_interval, tuning.poll_interval * (2 ** min(attempts, 10)))
    return rng.uniform(cap / 2, cap)


WAIT_LAG = 0.25  # a wait is looked at again after at most this fraction of its age (one poll interval at least)


def poll_interval(tuning: Tuning, unchanged_polls: int, waited: float | None = None) -> float:
    """Back off while nothing moves (x1.5 a poll, up to max_poll_interval), but never wait longer than a quarter
    of the time already waited (`waited`: seconds in this phase): a release that takes 3 s is seen within ~0.75 s,
    not after a backoff grown past it."""
    interval = min(tuning.max_poll_interval, tuning.poll_interval * (1.5 ** unchanged_polls))
    if waited is not None:
        interval = min(interval, max(tuning.poll_interval, WAIT_LAG * waited))
    return interval


def _waited(t: Tracked, now: datetime) -> float | None:
    return (now - t.phase_started).total_seconds() if t.phase_started is not None else None


def _at(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def stopped_note(t: Tracked) -> str:
    """Said of a task this run stopped (or unsubscribed) and did not delete: the worst moment to give up."""
    released = t.state in (TaskState.RELEASING, TaskState.DELETABLE, TaskState.DELETING) or (
        t.stop_attempts > 0 and (t.last_status or "").startswith(("RELEASE_RESOURCE", "RELEASE_CHILD")))
    return "; stopped by this run, not deleted" if released else ""


def last_seen(t: Tracked) -> str:
    if t.observed_at is None:
        return f"last reliably seen: {t.last_status or 'nothing'}"
    return f"last reliably seen: {t.last_status or 'nothing'} at {t.observed_at.isoformat(timespec='seconds')}"


# -- readings -------------------------------------------------------------------------------------------------


def on_bad_read(t: Tracked, why: str, now: datetime, tuning: Tuning, rng: random.Random) -> Decision:
    """An answer about this task that cannot be trusted: read again with backoff; block only after many."""
    n = t.bad_reads + 1
    if n >= MAX_BAD_READS:
        return Decision("block", reason=f"{why}; {n} unreadable answers in a row; {last_seen(t)}{stopped_note(t)}",
                        updates={"bad_reads": n})
    return Decision(updates={"bad_reads": n, "observe": True, "next_check": _at(now, backoff(tuning, n, rng))},
                    persist=False)


def on_reading(t: Tracked, r: Reading, now: datetime, tuning: Tuning, rng: random.Random) -> Decision:
    """What one reading of the task's remote status means."""
    state = t.state
    if reads_gone(r.status, r.error_code):
        gone = {"last_status": r.status or t.last_status, "observed_at": now}
        ours = state is TaskState.DELETING or (t.delete_sent and state in (TaskState.PENDING, TaskState.DELETABLE))
        if ours:
            return Decision("deleted", reason="read back deleted after our delete", error_code=r.error_code,
                            request_id=r.request_id, updates=gone)
        return Decision("vanished", reason="gone without a delete from this run", error_code=r.error_code,
                        request_id=r.request_id, updates=gone)
    if r.error_code:
        return on_bad_read(t, f"status unreadable: {r.error_code} {r.error_message or ''}".strip(), now, tuning, rng)
    cls = classify(r.status)
    if cls is StatusClass.UNKNOWN:
        return on_bad_read(t, f"unknown status {r.status!r}", now, tuning, rng)
    moved = r.status != t.last_status
    unchanged = 0 if moved else t.unchanged_polls + 1
    seen: dict[str, Any] = {"last_status": r.status, "observed_at": now, "bad_reads": 0, "detail_read": False,
                            "confirming": False,
                            "unchanged_polls": unchanged,
                            "next_check": _at(now, poll_interval(tuning, unchanged, _waited(t, now)))}
    rid = r.request_id
    if r.detail and r.order_id:
        seen["order_id"] = r.order_id
        # Refused, and the fresh detail read shows an order: that is why (even on a deletable status, where the
        # plan would have deleted it); acting again would be a blind repeat.
        refused = t.rejections > 0
        if not tuning.unsubscribe_prepaid and (refused or cls not in (StatusClass.DELETABLE, StatusClass.WAIT)):
            return Decision("block", reason=f"yearly/monthly order {r.order_id}: unsubscribe the order first "
                            "(or run with --unsubscribe-prepaid), then re-run" + stopped_note(t),
                            request_id=rid, updates=seen)
    prepaid = tuning.unsubscribe_prepaid and bool(seen.get("order_id") or t.order_id)
    if cls is StatusClass.DELETABLE:
        if state is TaskState.DELETING:
            return _reconcile(t, "delete", seen, rid)
        if state is TaskState.DELETABLE:
            return Decision(updates={**seen, "observe": False})
        phase = {} if t.delete_phase else {"delete_phase": True, "phase_started": now}
        return Decision("released", reason=f"{r.status} observed", request_id=rid,
                        updates={**seen, **phase, "observe": False})
    if state is TaskState.DELETING and not t.confirming:
        # A delete of unknown outcome, and the task reads as not deletable: perhaps a stale answer (a delete that
        # landed reads DELETED next). Read again before starting over.
        return Decision(updates={**seen, "observe": True, "confirming": True,
                                 "next_check": _at(now, tuning.poll_interval)})
    if state in (TaskState.DELETABLE, TaskState.DELETING):
        # It was deletable and is not any more: start over (a new stop phase) from an observation.
        return Decision("requeue", reason=f"status moved to {r.status}", request_id=rid,
                        updates={**seen, "delete_phase": False, "phase_started": now, "observe": True})
    if state is TaskState.UNSUBSCRIBING and cls is StatusClass.WAIT:
        return Decision("unsubscribe_accepted", reason=f"{r.status}: the unsubscribe is taking effect",
                        request_id=rid, updates=seen)
    if state is TaskState.UNSUBSCRIBING:
        # The unsubscribe's outcome is unknown and the task still runs: ask BSS about the order (never terminate).
        return Decision(updates={**seen, "observe": False}, persist=moved)
    if prepaid and state is TaskState.RELEASING and cls is not StatusClass.WAIT:
        # Unsubscribed: the service releases the task by itself after a while; never terminate it.
        return Decision(updates=seen, persist=moved)
    if cls is StatusClass.WAIT:
        if state is TaskState.STOPPING:
            return Decision("stop_accepted", reason=f"{r.status}: the stop is taking effect", request_id=rid,
                            updates=seen)
        return Decision(updates=seen, persist=moved)
    # Stoppable, or RELEASE_RESOURCE_FAILED: the next step is a stop.
    if state is TaskState.STOPPING:
        return _reconcile(t, "stop", {**seen, "next_check": now}, rid)
    if state is TaskState.RELEASING and cls is StatusClass.STOPPABLE and not t.confirming:
        # Stopped, and now it reads as running: perhaps a stale answer. Read again before stopping it again.
        return Decision(updates={**seen, "observe": True, "confirming": True,
                                 "next_check": _at(now, tuning.poll_interval)})
    if cls is StatusClass.RELEASE_FAILED and state is TaskState.RELEASING and not may_escalate(t, tuning):
        return Decision("fail", reason=f"{RELEASE_FAILED} after {t.stop_attempts} terminate(s); --no-force "
                        "forbids force_terminate", request_id=rid, updates=seen)
    return Decision(updates={**seen, "observe": False, "next_check": now}, persist=moved)


def _reconcile(t: Tracked, kind: str, seen: dict[str, Any], request_id: str | None) -> Decision:
    """In an intent state with an unknown outcome, and still needing it: send once more (the guard checks again)."""
    if t.resends >= MAX_RESENDS:
        return Decision("fail", reason=f"{kind} outcome unknown {t.resends} times; giving up{stopped_note(t)}",
                        request_id=request_id, updates=seen)
    # The `resend` / `redelete` intent is recorded when the request goes out.
    return Decision(updates={**seen, "resends": t.resends + 1, "observe": False})


def needs_fresh_reading(t: Tracked, now: datetime, tuning: Tuning) -> bool:
    """A first stop or delete goes out only on a reading at most about one poll interval old."""
    if t.state in (TaskState.STOPPING, TaskState.DELETING):
        return False  # reconciling: the reading that led here is the fresh one
    first = t.stop_attempts == 0 if t.state is not TaskState.DELETABLE else True
    if not first:
        return False
    return t.observed_at is None or (now - t.observed_at).total_seconds() > tuning.fresh_for


# -- stops ----------------------------------------------------------------------------------------------------


def may_escalate(t: Tracked, tuning: Tuning) -> bool:
    return t.stop_attempts < tuning.terminate_attempts or not tuning.no_force


@dataclass(frozen=True)
class StopPlan:
    force: bool
    trigger: str
    reason: str

    @property
    def kind(self) -> str:
        return "force_terminate" if self.force else "terminate"


def forces(t: Tracked, tuning: Tuning) -> bool:
    """Whether the next stop is a force_terminate: asked for, or after failed releases (unless --no-force)."""
    return forces_after(t.model.last_status, t.stop_attempts, tuning)


def forces_after(last_status: str | None, stop_attempts: int, tuning: Tuning) -> bool:
    """`forces` from the two facts of the task it reads."""
    return tuning.force or (last_status == RELEASE_FAILED and stop_attempts >= tuning.terminate_attempts
                            and not tuning.no_force)


def stop_plan(t: Tracked, tuning: Tuning) -> StopPlan:
    """Which stop to send and how to record it: terminate first, force_terminate after failed releases."""
    force = forces(t, tuning)
    kind = "force_terminate" if force else "terminate"
    if t.state is TaskState.STOPPING:
        return StopPlan(force, "resend", f"reconcile: outcome unknown, {kind} sent once more")
    if t.state is TaskState.RELEASING:
        step = "escalating to force_terminate" if force and not t.forced else f"{kind} again"
        return StopPlan(force, "stop", f"{t.last_status} after {t.stop_attempts} terminate(s): {step} "
                                       f"(attempt {t.stop_attempts + 1})")
    return StopPlan(force, "stop", f"{kind}: {t.last_status} must be stopped first")


# -- answers to destructive calls ------------------------------------------------------------------------------


def on_answer(t: Tracked, kind: str, a: Answer, now: datetime, tuning: Tuning, rng: random.Random) -> Decision:
    """One task's item in a batch-jobs answer (kind: stop or delete)."""
    rid = a.request_id
    if a.status is None:
        return Decision(reason=f"{kind}: the answer did not list this task",
                        updates={"observe": True, "next_check": now})
    if a.status == "success":
        done = {"resends": 0, "busy_retries": 0, "rejections": 0, "solo": False}
        if kind == "delete":
            return Decision("deleted", reason="delete accepted", request_id=rid, updates=done)
        return Decision("stop_accepted", reason="stop accepted", request_id=rid,
                        updates={**done, "observe": True, "unchanged_polls": 0,
                                 "next_check": _at(now, tuning.poll_interval)})
    code = a.error_code
    message = f"{kind} refused: {code} {a.error_msg or ''}".strip()
    cls = classify_code(code)
    if cls is ErrorClass.GONE:
        return Decision("deleted" if kind == "delete" else "vanished", reason=message, error_code=code,
                        request_id=rid, updates={"resends": 0})
    if cls in (ErrorClass.BUSY, ErrorClass.RETRYABLE):
        busy = t.busy_retries + 1
        return Decision("requeue", reason=message, error_code=code, request_id=rid,
                        updates={"resends": 0, "busy_retries": busy, "observe": True,
                                 "detail_read": busy % 3 == 0,
                                 "next_check": _at(now, backoff(tuning, busy, rng))})
    if code in CHILD_CODES:
        return Decision("block", reason=f"{message} (dual-active DR child: act on its parent)", error_code=code,
                        request_id=rid)
    if t.rejections < MAX_REJECTIONS:
        # Refused as things stand (DRS.M00304: not in this status; an order appeared ...): read the task afresh,
        # status and period_order, and decide on that; never repeat blindly.
        return Decision("requeue", reason=f"{message}; reading the task again before deciding", error_code=code,
                        request_id=rid, updates={"resends": 0, "rejections": t.rejections + 1, "observe": True,
                                                 "detail_read": True, "next_check": now})
    return Decision("fail", reason=f"{message} ({t.rejections + 1} refusals){stopped_note(t)}", error_code=code,
                    request_id=rid)


def on_failure(t: Tracked, kind: str, f: Failure, batch_size: int, now: datetime, tuning: Tuning,
               rng: random.Random) -> Decision:
    """The whole batch-jobs call failed: never sent, refused as a whole, or sent with an unknown outcome."""
    if f.kind == "auth":
        return Decision(abort=f"credentials refused: {f.message}", updates={"observe": True, "next_check": now},
                        persist=False)
    if f.kind == "not_sent":
        busy = t.busy_retries + 1
        updates: dict[str, Any] = {"busy_retries": busy, "observe": True, "error_code": f.code,
                                   "next_check": _at(now, backoff(tuning, busy, rng))}
        if kind == "stop":
            updates["stop_attempts"] = max(0, t.stop_attempts - 1)  # a terminate that never left is no attempt
        return Decision("requeue", reason=f"{kind} not sent: {f.message}", error_code=f.code,
                        request_id=f.request_id, updates=updates)
    if f.kind == "rejected":
        if batch_size > 1 and not t.solo:
            # Refused as a whole (DRS.M00202 ...): one of the batch caused it. Send each alone to find which.
            updates = {"solo": True, "observe": True, "next_check": now}
            if kind == "stop":
                updates["stop_attempts"] = max(0, t.stop_attempts - 1)
            return Decision("requeue", reason=f"{kind} refused as a whole batch ({f.code}); sending each task "
                            "alone", error_code=f.code, request_id=f.request_id, updates=updates)
        return Decision("fail", reason=f"{kind} refused: {f.message}{stopped_note(t)}", error_code=f.code,
                        request_id=f.request_id)
    # Sent, and it may have taken effect: stay in the intent; the next read decides (never blindly).
    return Decision(event="outcome_unknown", reason=f"{kind} outcome unknown: {f.message}; reading the status first",
                    error_code=f.code, request_id=f.request_id,
                    updates={"observe": True, "error_code": f.code,
                             "next_check": _at(now, min(tuning.poll_interval, 5.0))})


# -- deadlines and children -----------------------------------------------------------------------------------


def on_deadline(t: Tracked, now: datetime, tuning: Tuning, run_deadline: datetime) -> Decision | None:
    """time_out when the run's deadline, or this task's phase deadline, has passed."""
    if now >= run_deadline:
        why = f"run timeout ({tuning.timeout:g}s) passed"
    else:
        limit = tuning.delete_timeout if t.delete_phase else tuning.stop_timeout
        if (now - t.phase_started).total_seconds() < limit:
            return None
        why = f"{'delete' if t.delete_phase else 'stop'}-timeout ({limit:g}s) passed"
    return Decision("time_out", reason=f"{why}; last status {t.last_status}{stopped_note(t)}")


def on_resume(t: Tracked, timed_out_in: TaskState | None, now: datetime) -> Decision | None:
    """`resume` re-opens a task that timed out: back to the state it timed out in (so that state's rules hold:
    a released task is polled, not terminated again; an intent of unknown outcome is reconciled by reading),
    with a new phase budget, and read before anything is sent (no reading carried over). None: not re-opened
    (the task did not time out, or where it timed out is not known: it is left as it is, fail closed)."""
    if t.state is not TaskState.TIMED_OUT or timed_out_in not in ACTIVE:
        return None
    return Decision(RESUME_TIMED_OUT, reason=f"resumed: back to {timed_out_in.value} with a new budget, read "
                    f"before acting (was: {t.reason or 'timed out'})",
                    updates={"phase_started": now, "next_check": now, "observe": True, "observed_at": None,
                             "confirming": False, "bad_reads": 0, "unchanged_polls": 0, "busy_retries": 0,
                             "delete_phase": timed_out_in in (TaskState.DELETABLE, TaskState.DELETING)})


REMOVED = frozenset({"deleted", "skipped"})


def children_verdict(t: Tracked, children: Mapping[str, str]) -> Decision | None:
    """A parent waits for its re-edit children (job id -> outcome, "pending" while active) to be removed first.

    None: every child is gone, go on. NOTHING: some are still being removed, wait. A block: one was not removed,
    so the parent is left intact for the operator."""
    left = sorted(j for j, outcome in children.items() if outcome not in REMOVED and outcome != "pending")
    if left:
        return Decision("block", reason=f"re-edit child {', '.join(left)} was not removed "
                        f"({', '.join(sorted({children[j] for j in left}))}): the parent is left for the operator")
    if any(outcome == "pending" for outcome in children.values()):
        return NOTHING
    return None


def on_breakpoint(t: Tracked, gtid: str | None, position: str | None) -> Decision:
    """The breakpoint read before the delete (--record-breakpoint): recorded on the task and in the trail."""
    if not gtid and not position:
        return Decision(event="breakpoint", reason="no breakpoint shown (gtid and incre_start_position empty)",
                        updates={"breakpoint_read": True}, values={"gtid": None, "incre_start_position": None})
    return Decision(event="breakpoint", reason=f"replication stopped at gtid {gtid or '-'}, position "
                    f"{position or '-'}", updates={"breakpoint_read": True, "gtid": gtid,
                                                   "incre_start_position": position},
                    values={"gtid": gtid, "incre_start_position": position})
