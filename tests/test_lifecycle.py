"""The lifecycle table and its guard, derived from TRANSITIONS; property-based over random status sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.drs.client import DrsClient
from orchestrator.drs.codes import ALL_STATUSES, DELETABLE
from orchestrator.errors import GuardRefused, InvalidTransition
from orchestrator.lifecycle import (
    ACTIVE,
    REOPENABLE,
    RESUME_TIMED_OUT,
    TERMINAL,
    TRANSITIONS,
    TRIGGERS,
    Lifecycle,
    TaskModel,
    TaskState,
    mermaid,
)
from orchestrator.wire import DeletePermit

LC = Lifecycle()
STATUSES = st.sampled_from([*ALL_STATUSES, "SOMETHING_NEW", None])


def test_machine_has_no_auto_transitions() -> None:
    task = TaskModel("j", TaskState.PENDING)
    assert not hasattr(task, "to_deleted")
    assert "to_deleted" not in LC.machine.events
    with pytest.raises(InvalidTransition):
        LC.fire(task, "to_deleted")


# Every (terminal state, trigger) pair but the one exit, timed_out by resume_timed_out, which
# test_only_resume_reopens_a_timed_out_task covers.
@pytest.mark.parametrize(("state", "trigger"), [(s, t) for s in TERMINAL for t in TRIGGERS
                                                if not (s in REOPENABLE and t == RESUME_TIMED_OUT)])
def test_nothing_leaves_a_terminal_state(state: TaskState, trigger: str) -> None:
    task = TaskModel("j", state, last_status="RELEASE_RESOURCE_COMPLETE")
    with pytest.raises(InvalidTransition):
        LC.fire(task, trigger)
    assert task.state is state


def test_only_timed_out_is_reopenable_and_only_by_resume() -> None:
    assert {TaskState.TIMED_OUT} == REOPENABLE and REOPENABLE <= TERMINAL
    leaving_terminal = {(src, t["trigger"]) for t in TRANSITIONS
                        for src in (t["source"] if isinstance(t["source"], list) else [t["source"]])
                        if src in TERMINAL}
    assert leaving_terminal == {(TaskState.TIMED_OUT, RESUME_TIMED_OUT)}
    # resume_timed_out leaves nothing but timed_out (an active or another terminal state is not "resumed").
    for state in TaskState:
        if state is not TaskState.TIMED_OUT:
            with pytest.raises(InvalidTransition):
                LC.fire(TaskModel("j", state, timed_out_in=TaskState.RELEASING), RESUME_TIMED_OUT)


@pytest.mark.parametrize("where", list(ACTIVE))
@pytest.mark.parametrize("status", [*ALL_STATUSES, "SOMETHING_NEW", None])
def test_only_resume_reopens_a_timed_out_task(where: TaskState, status: str | None) -> None:
    """Back to exactly the state it timed out in, whatever the last status (the engine reads it next), through
    the Machine and the fast table alike; never to a state other than the one recorded."""
    fast = TaskModel("j", TaskState.TIMED_OUT, status, timed_out_in=where)
    slow = TaskModel("j", TaskState.TIMED_OUT, status, timed_out_in=where)
    assert LC.may(fast, RESUME_TIMED_OUT) and LC.may_machine(slow, RESUME_TIMED_OUT)
    step = LC.fire(fast, RESUME_TIMED_OUT)
    assert LC.fire_machine(slow, RESUME_TIMED_OUT) == step
    assert (step.source, step.dest, fast.state, slow.state) == (TaskState.TIMED_OUT, where, where, where)


@pytest.mark.parametrize("where", [None, *TERMINAL])
def test_a_timed_out_task_without_a_known_state_to_resume_into_stays_timed_out(where: TaskState | None) -> None:
    for fire in (LC.fire, LC.fire_machine):
        task = TaskModel("j", TaskState.TIMED_OUT, "RELEASE_RESOURCE_COMPLETE", timed_out_in=where)
        assert not LC.may(task, RESUME_TIMED_OUT)
        with pytest.raises(GuardRefused):
            fire(task, RESUME_TIMED_OUT)
        assert task.state is TaskState.TIMED_OUT


def test_a_resumed_task_still_needs_the_guard_to_delete() -> None:
    """Resumed back to deletable on a status that is no longer deletable: the guard refuses the delete."""
    task = TaskModel("j", TaskState.TIMED_OUT, "INCRE_TRANSFER_STARTED", timed_out_in=TaskState.DELETABLE)
    LC.fire(task, RESUME_TIMED_OUT)
    with pytest.raises(GuardRefused):
        LC.delete(task)
    task.last_status = "RELEASE_RESOURCE_COMPLETE"
    step, permit = LC.delete(task)
    assert step.dest is TaskState.DELETING and permit.observed_status == "RELEASE_RESOURCE_COMPLETE"


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_delete_guard_holds_for_every_status(status: str) -> None:
    task = TaskModel("j", TaskState.DELETABLE, last_status=status)
    if status in DELETABLE:
        step, permit = LC.delete(task)
        assert step.dest is TaskState.DELETING and permit.observed_status == status
    else:
        with pytest.raises(GuardRefused):
            LC.delete(task)
        assert task.state is TaskState.DELETABLE


def test_every_table_row_is_reachable_and_documented() -> None:
    for row in TRANSITIONS:
        assert row["doc"], row["trigger"]
    diagram = mermaid()
    for row in TRANSITIONS:
        assert f": {row['trigger']}" in diagram


async def _never_called() -> None:  # pragma: no cover
    raise AssertionError


def test_client_refuses_a_forged_permit() -> None:
    import asyncio

    client = DrsClient("http://127.0.0.1:9", "p" * 32)
    forged = DeletePermit("j", "RELEASE_RESOURCE_COMPLETE")
    with pytest.raises(TypeError, match="lifecycle guard"):
        asyncio.run(client.delete([forged]))
    asyncio.run(client.aclose())


class LifecycleMachine(RuleBasedStateMachine):
    """Random observations and triggers: the guard and terminal states hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.task = TaskModel("job")
        self.deletes_with_status: list[str | None] = []
        self.terminal_seen: TaskState | None = None

    @rule(status=STATUSES)
    def observe(self, status: str | None) -> None:
        self.task.last_status = status

    @rule(trigger=st.sampled_from([*TRIGGERS, "to_deleted", "bogus"]))
    def fire(self, trigger: str) -> None:
        before = self.task.state
        try:
            LC.fire(self.task, trigger)
        except (GuardRefused, InvalidTransition):
            assert self.task.state is before  # a refused trigger changes nothing
            return
        if trigger in ("delete", "redelete"):
            self.deletes_with_status.append(self.task.last_status)

    @precondition(lambda self: self.task.state in TERMINAL and self.terminal_seen is None)
    @rule()
    def note_terminal(self) -> None:
        self.terminal_seen = self.task.state

    @invariant()
    def guard_held(self) -> None:
        assert all(s in DELETABLE for s in self.deletes_with_status)

    @invariant()
    def terminal_is_final(self) -> None:
        if self.terminal_seen is not None:
            assert self.task.state is self.terminal_seen


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


class ResumableLifecycleMachine(LifecycleMachine):
    """The same, with resume in play: a timed-out task may be re-opened, only into the state it timed out in, and
    the guard still holds across any number of time-outs and resumes."""

    def __init__(self) -> None:
        super().__init__()
        self.timed_out_in: TaskState | None = None

    @rule(trigger=st.sampled_from([*TRIGGERS, "to_deleted", "bogus"]))
    def fire(self, trigger: str) -> None:
        before = self.task.state
        try:
            step = LC.fire(self.task, trigger)
        except (GuardRefused, InvalidTransition):
            assert self.task.state is before
            return
        if trigger in ("delete", "redelete"):
            self.deletes_with_status.append(self.task.last_status)
        if step.dest is TaskState.TIMED_OUT:
            self.timed_out_in = self.task.timed_out_in = step.source  # what resume reads from the trail
        if trigger == RESUME_TIMED_OUT:
            assert before is TaskState.TIMED_OUT and self.task.state is self.timed_out_in
            self.terminal_seen = None

    @invariant()
    def terminal_is_final(self) -> None:
        if self.terminal_seen is not None:
            assert self.task.state is self.terminal_seen


TestResumableLifecycleMachine = ResumableLifecycleMachine.TestCase
TestResumableLifecycleMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@given(st.lists(STATUSES, min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_may_agrees_with_fire(statuses: list[str | None]) -> None:
    task = TaskModel("j")
    for status in statuses:
        task.last_status = status
        for trigger in TRIGGERS:
            probe = TaskModel("j", task.state, task.last_status)
            expected = LC.may(probe, trigger)
            try:
                LC.fire(probe, trigger)
                fired = True
            except (GuardRefused, InvalidTransition):
                fired = False
            assert fired == expected, (trigger, task.state, status)


def _outcome(fire, task: TaskModel, trigger: str) -> tuple[object, ...]:
    try:
        step = fire(task, trigger)
    except (GuardRefused, InvalidTransition) as exc:
        return (type(exc), str(exc), task.state)
    return ("fired", step, task.state)


@pytest.mark.parametrize("state", list(TaskState))
def test_fast_table_agrees_with_the_machine(state: TaskState) -> None:
    """fire/may apply a table read off the Machine: for every (state, trigger, remote status, order) they give what
    the transitions Machine gives (the same step, the same error and message, the same state after)."""
    triggers = [*TRIGGERS, "to_deleted", "bogus"]
    for trigger in triggers:
        for status in [*ALL_STATUSES, "SOMETHING_NEW", None]:
            for order in (None, "", "order-1"):
                fast, slow = TaskModel("j", state, status, order), TaskModel("j", state, status, order)
                assert LC.may(fast, trigger) == LC.may_machine(slow, trigger), (state, trigger, status, order)
                assert _outcome(LC.fire, fast, trigger) == _outcome(LC.fire_machine, slow, trigger), \
                    (state, trigger, status, order)
                assert fast == slow


def test_fast_table_covers_every_machine_transition() -> None:
    machine_rows = {(trigger, src, tr.dest, tuple(c.func for c in tr.conditions))
                    for trigger, event in LC.machine.events.items()
                    for src, transitions in event.transitions.items() for tr in transitions}
    table_rows = {(trigger, src.name, dest.name, tuple(f for f, _ in conditions))
                  for trigger, by_source in LC.table.items()
                  for src, options in by_source.items() for dest, conditions in options}
    assert table_rows == machine_rows
    assert len(machine_rows) == sum(len(t["source"]) if isinstance(t["source"], list) else 1 for t in TRANSITIONS)
