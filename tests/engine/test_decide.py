"""The engine's decision core as tables: every remote status × every active local state, every error class of a
batch-jobs answer and of a whole failed call, bad reads, deadlines and children. No I/O, no clock, no store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.drs.codes import ALL_STATUSES, DELETABLE, RELEASE_FAILED, STOPPABLE, WAIT
from orchestrator.engine.decide import (
    NOTHING,
    Answer,
    Decision,
    Failure,
    Reading,
    Tracked,
    children_verdict,
    needs_fresh_reading,
    on_answer,
    on_bad_read,
    on_deadline,
    on_failure,
    on_reading,
    on_resume,
    stop_plan,
)
from orchestrator.engine.tuning import MAX_BAD_READS, MAX_REJECTIONS, MAX_RESENDS, Tuning
from orchestrator.errors import GuardRefused, InvalidTransition
from orchestrator.lifecycle import ACTIVE, RESUME_TIMED_OUT, TERMINAL, Lifecycle, TaskModel, TaskState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TUNING = Tuning(poll_interval=5.0)
RNG = random.Random(7)
LC = Lifecycle()
S = TaskState


def task(state: TaskState = S.PENDING, status: str | None = "INCRE_TRANSFER_STARTED", **kw: object) -> Tracked:
    fields: dict[str, object] = {"phase_started": NOW, "next_check": NOW, "observed_at": NOW}
    fields.update(kw)
    return Tracked(model=TaskModel("j", state, status), planned_action="stop_then_delete", **fields)  # type: ignore[arg-type]


def fires(t: Tracked, d: Decision) -> None:
    """The decided trigger is one the lifecycle accepts from this state (after the decision's updates)."""
    if d.trigger is None:
        return
    model = TaskModel(t.job_id, t.state, d.updates.get("last_status", t.last_status),
                      d.updates.get("order_id", t.order_id))
    LC.fire(model, d.trigger)


EXPECTED_TRIGGER = {
    # (local state, status class) -> trigger the core fires on a reliable reading
    (S.PENDING, "deletable"): "released", (S.STOPPING, "deletable"): "released",
    (S.RELEASING, "deletable"): "released", (S.DELETABLE, "deletable"): None, (S.DELETING, "deletable"): None,
    (S.PENDING, "wait"): None, (S.STOPPING, "wait"): "stop_accepted", (S.RELEASING, "wait"): None,
    (S.DELETABLE, "wait"): "requeue", (S.DELETING, "wait"): "requeue",
    (S.PENDING, "stoppable"): None, (S.STOPPING, "stoppable"): None, (S.RELEASING, "stoppable"): None,
    (S.DELETABLE, "stoppable"): "requeue", (S.DELETING, "stoppable"): "requeue",
    (S.UNSUBSCRIBING, "deletable"): "released", (S.UNSUBSCRIBING, "wait"): "unsubscribe_accepted",
    (S.UNSUBSCRIBING, "stoppable"): None,
}


def _class(status: str) -> str:
    if status in DELETABLE:
        return "deletable"
    if status in WAIT:
        return "wait"
    return "stoppable"


@pytest.mark.parametrize("state", ACTIVE, ids=lambda s: s.value)
@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s != "DELETED"])
def test_every_status_in_every_active_state(state: TaskState, status: str) -> None:
    t = task(state, "INCRE_TRANSFER_STARTED" if status != "INCRE_TRANSFER_STARTED" else "PAUSING",
             order_id="CS1" if state is S.UNSUBSCRIBING else None)
    if state is S.DELETING and _class(status) != "deletable":
        # A delete of unknown outcome, reading as not deletable: read once more first (a stale answer?).
        first = on_reading(t, Reading(status), NOW, TUNING, RNG)
        assert first.trigger is None and first.updates["observe"] is True and first.updates["confirming"] is True
        t.confirming = True
    d = on_reading(t, Reading(status, request_id="r1"), NOW, TUNING, RNG)
    assert d.updates["last_status"] == status and d.updates["observed_at"] == NOW and d.updates["bad_reads"] == 0
    assert d.trigger == EXPECTED_TRIGGER[(state, _class(status))], (state, status, d)
    fires(t, d)
    if state is S.UNSUBSCRIBING and _class(status) == "stoppable":
        assert d.updates["observe"] is False  # outcome unknown: the BSS flow reads the order next (no terminate)
    elif _class(status) == "stoppable" and state is S.PENDING:
        assert d.updates["observe"] is False  # a stop comes next
    elif _class(status) == "stoppable" and state is S.RELEASING:
        # Stopped and reading as running: read once more (a stale answer?) before stopping again.
        assert d.updates["observe"] is (status != RELEASE_FAILED)
        t.model.last_status, t.confirming = status, True
        again = on_reading(t, Reading(status), NOW, TUNING, RNG)
        assert again.updates["observe"] is False
    if state is S.STOPPING and _class(status) == "stoppable":
        assert d.updates["resends"] == 1 and d.updates["observe"] is False  # reconcile: once more
    if state is S.DELETING and _class(status) == "deletable":
        assert d.updates["resends"] == 1 and d.updates["observe"] is False


@pytest.mark.parametrize("state", ACTIVE, ids=lambda s: s.value)
@pytest.mark.parametrize(("reading", "trigger"), [
    (Reading("DELETED"), "vanished"), (Reading(None, "DRS.M00289"), "vanished"),
    (Reading(None, "DRS.M05004"), "vanished"), (Reading(None, "DRS.M05003"), "vanished"),
])
def test_gone_is_deleted_after_our_delete_and_vanished_otherwise(state: TaskState, reading: Reading,
                                                                 trigger: str) -> None:
    t = task(state)
    d = on_reading(t, reading, NOW, TUNING, RNG)
    assert d.trigger == ("deleted" if state is S.DELETING else trigger)
    fires(t, d)


@pytest.mark.parametrize("reading", [Reading("QUANTUM_FLUX"), Reading(None), Reading("RUNNING", "DRS.M00004"),
                                     Reading(None, "DRS.M00202", "bad id")])
@pytest.mark.parametrize("state", ACTIVE, ids=lambda s: s.value)
def test_unreadable_and_unknown_are_read_again_then_blocked_after_the_count(reading: Reading,
                                                                           state: TaskState) -> None:
    t = task(state, "RELEASE_RESOURCE_STARTED", stop_attempts=1)
    for n in range(1, MAX_BAD_READS):
        d = on_reading(t, reading, NOW, TUNING, RNG)
        assert d.trigger is None and not d.persist and d.updates["observe"] is True
        assert d.updates["next_check"] > NOW and d.updates["bad_reads"] == n
        t.bad_reads = n
    d = on_reading(t, reading, NOW, TUNING, RNG)
    assert d.trigger == "block"
    assert f"{MAX_BAD_READS} unreadable answers in a row" in (d.reason or "")
    assert "last reliably seen: RELEASE_RESOURCE_STARTED" in (d.reason or "")
    assert (d.reason or "").endswith("stopped by this run, not deleted")
    fires(t, d)


def test_a_good_reading_resets_the_bad_read_count() -> None:
    t = task(S.RELEASING, "RELEASE_RESOURCE_STARTED", bad_reads=MAX_BAD_READS - 1)
    assert on_reading(t, Reading("RELEASE_RESOURCE_STARTED"), NOW, TUNING, RNG).updates["bad_reads"] == 0


def test_a_detail_reading_with_an_order_blocks_unless_opted_in() -> None:
    t = task(S.PENDING)
    d = on_reading(t, Reading("INCRE_TRANSFER_STARTED", order_id="CS9", detail=True), NOW, TUNING, RNG)
    assert d.trigger == "block" and "CS9" in (d.reason or "") and d.updates["order_id"] == "CS9"
    opted = Tuning(unsubscribe_prepaid=True)
    d = on_reading(t, Reading("INCRE_TRANSFER_STARTED", order_id="CS9", detail=True), NOW, opted, RNG)
    assert d.trigger is None and d.updates["order_id"] == "CS9" and d.updates["observe"] is False
    # Unsubscribed, releasing, a status read still shows it running: wait, never terminate.
    t = task(S.RELEASING, order_id="CS9")
    assert "observe" not in on_reading(t, Reading("INCRE_TRANSFER_STARTED"), NOW, opted, RNG).updates


def test_release_failed_escalates_or_fails_under_no_force() -> None:
    t = task(S.RELEASING, RELEASE_FAILED, stop_attempts=2)
    assert on_reading(t, Reading(RELEASE_FAILED), NOW, TUNING, RNG).trigger is None
    assert stop_plan(t, TUNING).kind == "force_terminate"
    assert "escalating to force_terminate" in stop_plan(t, TUNING).reason
    d = on_reading(t, Reading(RELEASE_FAILED), NOW, Tuning(no_force=True), RNG)
    assert d.trigger == "fail" and "--no-force" in (d.reason or "")
    assert stop_plan(task(S.RELEASING, RELEASE_FAILED, stop_attempts=1), TUNING).kind == "terminate"
    assert stop_plan(task(), Tuning(force=True)).kind == "force_terminate"
    assert stop_plan(task(S.STOPPING), TUNING).trigger == "resend"


def test_reconcile_gives_up_after_max_resends() -> None:
    t = task(S.STOPPING, resends=MAX_RESENDS)
    assert on_reading(t, Reading("INCRE_TRANSFER_STARTED"), NOW, TUNING, RNG).trigger == "fail"
    t = task(S.DELETING, "RELEASE_RESOURCE_COMPLETE", resends=MAX_RESENDS)
    assert on_reading(t, Reading("RELEASE_RESOURCE_COMPLETE"), NOW, TUNING, RNG).trigger == "fail"


@pytest.mark.parametrize("kind", ["stop", "delete"])
@pytest.mark.parametrize(("answer", "trigger", "detail_read"), [
    (Answer("success"), {"stop": "stop_accepted", "delete": "deleted"}, False),
    (Answer("failed", "DRS.M00289"), {"stop": "vanished", "delete": "deleted"}, False),
    (Answer("failed", "DRS.M05004"), {"stop": "vanished", "delete": "deleted"}, False),
    (Answer("failed", "DRS.M01504"), "requeue", False),
    (Answer("failed", "DRS.M01503"), "requeue", False),
    (Answer("failed", "APIGW.0308"), "requeue", False),
    (Answer("failed", "DRS.M00308"), "block", False),
    (Answer("failed", "DRS.M00304"), "requeue", True),
    (Answer("failed", "DRS.M00007"), "requeue", True),
    (Answer(None), None, False),
])
def test_every_answer_class(kind: str, answer: Answer, trigger: object, detail_read: bool) -> None:
    t = task(S.STOPPING if kind == "stop" else S.DELETING,
             "INCRE_TRANSFER_STARTED" if kind == "stop" else "RELEASE_RESOURCE_COMPLETE")
    d = on_answer(t, kind, answer, NOW, TUNING, RNG)
    want = trigger[kind] if isinstance(trigger, dict) else trigger
    assert d.trigger == want
    assert bool(d.updates.get("detail_read")) is detail_read
    if answer.status is None:
        assert d.updates["observe"] is True  # not listed: reconcile by reading, never assume
    fires(t, d)


def test_refusals_are_followed_by_a_detail_read_then_fail() -> None:
    t = task(S.DELETING, "RELEASE_RESOURCE_COMPLETE")
    for n in range(MAX_REJECTIONS):
        t.rejections = n
        d = on_answer(t, "delete", Answer("failed", "DRS.M00304"), NOW, TUNING, RNG)
        assert d.trigger == "requeue" and d.updates["detail_read"] is True
    t.rejections = MAX_REJECTIONS
    assert on_answer(t, "delete", Answer("failed", "DRS.M00304"), NOW, TUNING, RNG).trigger == "fail"


def test_a_refusal_then_a_detail_read_showing_an_order_blocks_even_on_a_deletable_status() -> None:
    """An order that appears after the stop (issue 12): the delete is refused, the detail read shows the task
    deletable and billed yearly/monthly. The plan would delete a deletable task with an order, but after a refusal
    that would be a blind repeat: it is blocked, the order named, and the note that this run stopped it."""
    t = task(S.DELETING, "RELEASE_RESOURCE_COMPLETE", stop_attempts=1)
    d = on_answer(t, "delete", Answer("failed", "DRS.M00304", "billed yearly/monthly"), NOW, TUNING, RNG)
    assert d.trigger == "requeue" and d.updates["detail_read"] is True
    fires(t, d)
    t = task(S.PENDING, "RELEASE_RESOURCE_COMPLETE", stop_attempts=1, rejections=1)
    d = on_reading(t, Reading("RELEASE_RESOURCE_COMPLETE", order_id="CS7", detail=True), NOW, TUNING, RNG)
    assert d.trigger == "block" and "yearly/monthly order CS7" in (d.reason or "")
    assert (d.reason or "").endswith("stopped by this run, not deleted")
    fires(t, d)
    # Without a refusal first, a deletable task with an order is deleted as planned; so is an opted-in one.
    fresh = task(S.PENDING, "RELEASE_RESOURCE_COMPLETE")
    assert on_reading(fresh, Reading("RELEASE_RESOURCE_COMPLETE", order_id="CS7", detail=True), NOW, TUNING,
                      RNG).trigger == "released"
    assert on_reading(t, Reading("RELEASE_RESOURCE_COMPLETE", order_id="CS7", detail=True), NOW,
                      Tuning(unsubscribe_prepaid=True), RNG).trigger == "released"


def test_busy_backs_off_and_reads_detail_every_third_time() -> None:
    t = task(S.STOPPING)
    flags = []
    for n in range(6):
        t.busy_retries = n
        d = on_answer(t, "stop", Answer("failed", "DRS.M01504"), NOW, TUNING, RNG)
        assert d.updates["next_check"] > NOW
        flags.append(d.updates["detail_read"])
    assert flags == [False, False, True, False, False, True]


@pytest.mark.parametrize("kind", ["stop", "delete"])
@pytest.mark.parametrize(("failure", "batch", "trigger", "event"), [
    (Failure("auth", "401"), 2, None, None),
    (Failure("not_sent", "refused", "ConnectError"), 2, "requeue", None),
    (Failure("rejected", "400", "DRS.M00202"), 2, "requeue", None),
    (Failure("rejected", "400", "DRS.M00202"), 1, "fail", None),
    (Failure("unknown", "dropped", "RemoteProtocolError"), 2, None, "outcome_unknown"),
])
def test_every_whole_call_failure(kind: str, failure: Failure, batch: int, trigger: str | None,
                                  event: str | None) -> None:
    t = task(S.STOPPING if kind == "stop" else S.DELETING, stop_attempts=1)
    d = on_failure(t, kind, failure, batch, NOW, TUNING, RNG)
    assert d.trigger == trigger and d.event == event
    if failure.kind == "auth":
        assert d.abort and "credentials refused" in d.abort
    if failure.kind == "rejected" and batch > 1:
        assert d.updates["solo"] is True  # split: find the task the batch was refused for
    if trigger == "requeue" and kind == "stop":
        assert d.updates["stop_attempts"] == 0  # a stop that never took effect is no attempt
    if event:
        assert d.updates["observe"] is True  # read before any re-send
    fires(t, d)


def test_solo_refused_fails() -> None:
    t = task(S.STOPPING, solo=True)
    assert on_failure(t, "stop", Failure("rejected", "400", "DRS.M00202"), 1, NOW, TUNING, RNG).trigger == "fail"


def test_deadlines() -> None:
    t = task(S.RELEASING, "RELEASE_RESOURCE_STARTED", stop_attempts=1)
    far = NOW + timedelta(days=1)
    assert on_deadline(t, NOW + timedelta(seconds=10), TUNING, far) is None
    d = on_deadline(t, NOW + timedelta(seconds=TUNING.stop_timeout), TUNING, far)
    assert d is not None and d.trigger == "time_out" and (d.reason or "").startswith("stop-timeout (1800s)")
    assert (d.reason or "").endswith("stopped by this run, not deleted")
    t.delete_phase = True
    d = on_deadline(t, NOW + timedelta(seconds=TUNING.delete_timeout), TUNING, far)
    assert d is not None and (d.reason or "").startswith("delete-timeout (600s)")
    d = on_deadline(task(), NOW + timedelta(seconds=5), TUNING, NOW + timedelta(seconds=5))
    assert d is not None and (d.reason or "").startswith("run timeout")


def test_fresh_readings_for_first_actions() -> None:
    stale = NOW - timedelta(seconds=TUNING.fresh_for + 1)
    assert needs_fresh_reading(task(observed_at=stale), NOW, TUNING)
    assert needs_fresh_reading(task(observed_at=None), NOW, TUNING)
    assert not needs_fresh_reading(task(observed_at=NOW), NOW, TUNING)
    assert needs_fresh_reading(task(S.DELETABLE, "RELEASE_RESOURCE_COMPLETE", observed_at=stale), NOW, TUNING)
    assert not needs_fresh_reading(task(S.STOPPING, observed_at=stale), NOW, TUNING)  # reconciling
    assert not needs_fresh_reading(task(S.RELEASING, RELEASE_FAILED, stop_attempts=2, observed_at=stale),
                                   NOW, TUNING)


def test_children_first() -> None:
    parent = task()
    assert children_verdict(parent, {"c1": "pending"}) is NOTHING
    assert children_verdict(parent, {"c1": "deleted", "c2": "skipped"}) is None
    d = children_verdict(parent, {"c1": "deleted", "c2": "failed"})
    assert d is not None and d.trigger == "block" and "c2" in (d.reason or "")


def test_on_bad_read_never_fires_before_the_count() -> None:
    t = task()
    d = on_bad_read(t, "x", NOW, TUNING, RNG)
    assert d.trigger is None and not d.persist


def test_the_lifecycle_refuses_what_the_core_must_never_ask() -> None:
    # The guard: delete only on a deletable status; nothing leaves a terminal state.
    for status in STOPPABLE | WAIT:
        with pytest.raises(GuardRefused):
            LC.fire(TaskModel("j", S.DELETABLE, status), "delete")
    for state in TERMINAL:
        with pytest.raises(InvalidTransition):
            LC.fire(TaskModel("j", state, "RELEASE_RESOURCE_COMPLETE"), "requeue")


def test_a_wait_is_looked_at_again_within_a_quarter_of_its_age() -> None:
    from orchestrator.engine.decide import poll_interval

    tuning = Tuning(poll_interval=0.5, max_poll_interval=60.0)
    assert poll_interval(tuning, 0) == 0.5
    assert poll_interval(tuning, 6) == 0.5 * 1.5 ** 6  # plain backoff without an age
    assert poll_interval(tuning, 6, waited=3.0) == 0.75  # a 3 s release is not polled 5.7 s apart
    assert poll_interval(tuning, 6, waited=1.0) == 0.5  # never below one poll interval
    assert poll_interval(tuning, 20, waited=1000.0) == 60.0  # and never above the maximum


# -- resume re-opens a timed-out task ----------------------------------------------------------------------------


def _resumed(where: TaskState, status: str, **kw: object) -> Tracked:
    """A task that timed out in `where` (last seen `status`), re-opened by resume one hour later."""
    later = NOW + timedelta(hours=1)
    t = task(S.TIMED_OUT, status, reason="run timeout (600s) passed; last status " + status, **kw)
    t.model.timed_out_in = where
    d = on_resume(t, where, later)
    assert d is not None and d.trigger == RESUME_TIMED_OUT
    assert d.reason is not None and d.reason.startswith(f"resumed: back to {where.value} with a new budget")
    assert "run timeout (600s) passed" in d.reason  # why it had ended, kept in the record
    LC.fire(t.model, d.trigger)
    for key, value in d.updates.items():
        setattr(t, key, value)
    assert t.state is where and t.phase_started == later  # a new phase budget
    assert t.observe is True and t.observed_at is None and t.next_check == later  # read before anything is sent
    return t


@pytest.mark.parametrize("where", ACTIVE, ids=lambda s: s.value)
@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s != "DELETED"])
def test_a_resumed_task_is_read_first_then_decided_as_in_the_state_it_timed_out_in(where: TaskState,
                                                                                   status: str) -> None:
    """Re-opened into the state it timed out in: nothing is sent before a reading (a first stop or delete needs a
    fresh one, and there is none), and the reading is decided by that state's rules, as for any task there."""
    before = "INCRE_TRANSFER_STARTED" if status != "INCRE_TRANSFER_STARTED" else "PAUSING"
    t = _resumed(where, before, order_id="CS1" if where is S.UNSUBSCRIBING else None,
                 stop_attempts=1 if where in (S.RELEASING, S.STOPPING) else 0)
    later = t.phase_started
    if where not in (S.STOPPING, S.DELETING) and not (where is S.RELEASING and t.stop_attempts):
        assert needs_fresh_reading(t, later, TUNING)
    if where is S.DELETING and _class(status) != "deletable":
        first = on_reading(t, Reading(status), later, TUNING, RNG)
        assert first.trigger is None and first.updates["confirming"] is True
        t.confirming = True
    d = on_reading(t, Reading(status), later, TUNING, RNG)
    assert d.trigger == EXPECTED_TRIGGER[(where, _class(status))], (where, status, d)
    fires(t, d)


@pytest.mark.parametrize("status", ["RELEASE_RESOURCE_STARTED", "RELEASE_RESOURCE_COMPLETE", "INCRE_TRANSFER_STARTED"])
def test_a_resumed_task_whose_stop_was_sent_is_not_terminated_again_because_of_the_resume(status: str) -> None:
    """Stopped, releasing when the run timed out: resumed, it is polled (RELEASE_RESOURCE_STARTED), released
    (deletable), and a reading as running (a stale answer?) is confirmed by another read before any stop."""
    t = _resumed(S.RELEASING, "RELEASE_RESOURCE_STARTED", stop_attempts=1)
    d = on_reading(t, Reading(status), t.phase_started, TUNING, RNG)
    if status == "RELEASE_RESOURCE_STARTED":
        assert d.trigger is None and "observe" not in d.updates  # still reading, nothing to send
    elif status in DELETABLE:
        assert d.trigger == "released" and d.updates["observe"] is False  # the guarded delete follows
    else:
        assert d.trigger is None and d.updates["observe"] is True and d.updates["confirming"] is True
    fires(t, d)


def test_a_resumed_delete_of_unknown_outcome_that_reads_gone_is_ours() -> None:
    t = _resumed(S.DELETING, "RELEASE_RESOURCE_COMPLETE")
    d = on_reading(t, Reading(None, "DRS.M00289"), t.phase_started, TUNING, RNG)
    assert d.trigger == "deleted"
    fires(t, d)


def test_a_resumed_unsubscribed_task_is_never_terminated() -> None:
    tuning = Tuning(poll_interval=5.0, unsubscribe_prepaid=True)
    t = _resumed(S.RELEASING, "INCRE_TRANSFER_STARTED", order_id="CS1")
    d = on_reading(t, Reading("INCRE_TRANSFER_STARTED"), t.phase_started, tuning, RNG)
    assert d.trigger is None and d.updates.get("observe") is not False  # polled: no terminate ever follows


@pytest.mark.parametrize("where", [None, *TERMINAL], ids=str)
def test_resume_leaves_alone_what_did_not_time_out_or_cannot_be_placed(where: TaskState | None) -> None:
    assert on_resume(task(S.TIMED_OUT, "RELEASE_RESOURCE_STARTED"), where, NOW) is None
    for state in TaskState:
        if state is not S.TIMED_OUT:
            assert on_resume(task(state), S.RELEASING, NOW) is None
