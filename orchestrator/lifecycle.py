"""The local lifecycle of a task in a run: one shared `transitions` Machine, one table, one guard.

`stopping` and `deleting` are intents: the transition is committed before the request is sent, so after a
crash a task found there is reconciled by reading its remote status, never blindly re-sent.
The guard: `delete` fires only when the freshest observed remote status is deletable; the DeletePermit it
yields is the only thing the client accepts for a delete.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine, MachineError

from orchestrator.drs.codes import DELETABLE, RELEASE_FAILED, STOPPABLE
from orchestrator.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, GuardRefused, InvalidTransition
from orchestrator.wire import DeletePermit, issue_permit


class TaskState(enum.Enum):
    """Local states; the last five are terminal (`timed_out` may be re-opened by `resume`)."""

    PENDING = "pending"
    UNSUBSCRIBING = "unsubscribing"
    STOPPING = "stopping"
    RELEASING = "releasing"
    DELETABLE = "deletable"
    DELETING = "deleting"
    DELETED = "deleted"
    SKIPPED = "skipped"
    BLOCKED = "blocked"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


S = TaskState
TERMINAL: frozenset[TaskState] = frozenset({S.DELETED, S.SKIPPED, S.BLOCKED, S.FAILED, S.TIMED_OUT})
# Terminal for the run that reached it, but `resume` may re-open it (RESUME_TIMED_OUT): the only such state.
REOPENABLE: frozenset[TaskState] = frozenset({S.TIMED_OUT})
RESUME_TIMED_OUT = "resume_timed_out"
ACTIVE: tuple[TaskState, ...] = tuple(s for s in TaskState if s not in TERMINAL)
INTENTS: frozenset[TaskState] = frozenset({S.UNSUBSCRIBING, S.STOPPING, S.DELETING})

# The one outcome vocabulary: a terminal state is its own outcome; every other state is "pending".
OUTCOMES: tuple[str, ...] = ("deleted", "skipped", "blocked", "failed", "timed_out", "pending")
# Problems first: how reports, plans and status order their rows.
OUTCOME_ORDER: tuple[str, ...] = ("failed", "timed_out", "blocked", "pending", "skipped", "deleted")


def outcome_of(state: TaskState) -> str:
    return state.value if state in TERMINAL else "pending"


def exit_code_for(counts: Mapping[str, int]) -> int:
    """The contract's exit code for a run's outcome counts."""
    if counts.get("pending"):
        return EXIT_INTERRUPTED
    if counts.get("blocked") or counts.get("failed") or counts.get("timed_out"):
        return EXIT_INCOMPLETE
    return EXIT_OK


def _status_deletable(event: EventData) -> bool:
    return getattr(event.model, "last_status", None) in DELETABLE


def _has_order(event: EventData) -> bool:
    return bool(getattr(event.model, "order_id", None))


def _status_stoppable(event: EventData) -> bool:
    status = getattr(event.model, "last_status", None)
    return status in STOPPABLE or status == RELEASE_FAILED


def _timed_out_in(state: TaskState) -> Callable[[EventData], bool]:
    """The condition of `resume_timed_out` back to `state`: the task timed out there (its `time_out` record's
    source state, which the caller reads from the trail into `TaskModel.timed_out_in`)."""
    def check(event: EventData) -> bool:
        return getattr(event.model, "timed_out_in", None) is state
    check.__name__ = f"timed_out_in_{state.value}"
    return check


# A timed-out task is resumed into the state it timed out in, so every rule of that state holds again: a task
# stopped and releasing is polled (never terminated again because it was resumed), an intent whose outcome was
# unknown is reconciled by reading, an unsubscribed task is never terminated.
_RESUMED_DOC = {
    S.PENDING: "resume: a task timed out before any stop went out is observed again",
    S.UNSUBSCRIBING: "resume: an unsubscribe of unknown outcome is reconciled by reading (never re-sent blindly)",
    S.STOPPING: "resume: a stop of unknown outcome is reconciled by reading (never re-sent blindly)",
    S.RELEASING: "resume: a stopped task is polled until deletable (no second terminate because of the resume)",
    S.DELETABLE: "resume: read again; the guarded delete goes out only on a fresh deletable reading",
    S.DELETING: "resume: a delete of unknown outcome is reconciled by reading (never re-sent blindly)",
}


# The one table: the machine, the README diagram and the tests are all derived from it.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "stop", "source": [S.PENDING, S.RELEASING], "dest": S.STOPPING, "conditions": [_status_stoppable],
     "doc": "intent: terminate (or force_terminate) is about to be sent"},
    {"trigger": "stop_accepted", "source": S.STOPPING, "dest": S.RELEASING,
     "doc": "the service accepted the stop, or is already releasing"},
    {"trigger": "unsubscribe", "source": S.PENDING, "dest": S.UNSUBSCRIBING, "conditions": [_has_order],
     "doc": "intent (--unsubscribe-prepaid): the BSS unsubscribe of the task's yearly/monthly order is about to be "
            "sent; no terminate follows"},
    {"trigger": "unsubscribe_accepted", "source": S.UNSUBSCRIBING, "dest": S.RELEASING,
     "doc": "BSS accepted the unsubscribe, or the task is already releasing: wait for the service to release it"},
    {"trigger": "released", "source": [S.PENDING, S.UNSUBSCRIBING, S.STOPPING, S.RELEASING], "dest": S.DELETABLE,
     "conditions": [_status_deletable], "doc": "a deletable status was observed"},
    {"trigger": "delete", "source": S.DELETABLE, "dest": S.DELETING, "conditions": [_status_deletable],
     "doc": "THE GUARD: intent to delete, only on a freshly observed deletable status"},
    {"trigger": "deleted", "source": [S.PENDING, S.DELETABLE, S.DELETING], "dest": S.DELETED,
     "doc": "delete accepted, or the task read back DELETED / not found after our delete (also after a delete "
            "whose answer was lost or refused as busy)"},
    {"trigger": "resend", "source": S.STOPPING, "dest": "=", "conditions": [_status_stoppable],
     "doc": "reconcile: the stop's outcome was unknown and the task is still stoppable; sent once more"},
    {"trigger": "redelete", "source": S.DELETING, "dest": "=", "conditions": [_status_deletable],
     "doc": "reconcile: the delete's outcome was unknown and the task is still deletable; sent once more"},
    {"trigger": "unsubscribe_again", "source": S.UNSUBSCRIBING, "dest": "=", "conditions": [_has_order],
     "doc": "reconcile: the unsubscribe's outcome was unknown and the order is still active; sent once more"},
    {"trigger": "requeue", "source": [S.UNSUBSCRIBING, S.STOPPING, S.RELEASING, S.DELETABLE, S.DELETING],
     "dest": S.PENDING,
     "doc": "rejected as busy or the status moved: observe again before acting"},
    {"trigger": "vanished", "source": [S.PENDING, S.UNSUBSCRIBING, S.STOPPING, S.RELEASING, S.DELETABLE],
     "dest": S.SKIPPED,
     "doc": "gone (DELETED or not found) without a delete from this run"},
    {"trigger": "skip", "source": S.PENDING, "dest": S.SKIPPED, "doc": "plan: already gone or not found"},
    {"trigger": "block", "source": list(ACTIVE), "dest": S.BLOCKED,
     "doc": "needs an operator: yearly/monthly order, dual-active child, unknown status, unreadable answer"},
    {"trigger": "fail", "source": list(ACTIVE), "dest": S.FAILED, "doc": "the service refused for good"},
    {"trigger": "time_out", "source": list(ACTIVE), "dest": S.TIMED_OUT, "doc": "a deadline passed"},
    # The one way out of a terminal state: `resume` gives a timed-out task a new budget, back in the state it
    # timed out in (recorded with the reason); the engine then reads it before acting.
    *({"trigger": RESUME_TIMED_OUT, "source": S.TIMED_OUT, "dest": state, "conditions": [_timed_out_in(state)],
       "doc": doc} for state, doc in _RESUMED_DOC.items()),
]
TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))




@dataclass
class TaskModel:
    """What the machine needs of a task: its state and the freshest remote status."""

    job_id: str
    state: TaskState = S.PENDING
    last_status: str | None = None
    order_id: str | None = None  # a yearly/monthly order (period_order.order_id)
    timed_out_in: TaskState | None = None  # timed_out: the state it timed out in (what resume_timed_out restores)


@dataclass(frozen=True)
class Step:
    """One fired transition, ready to be recorded."""

    job_id: str
    trigger: str
    source: TaskState
    dest: TaskState
    remote_status: str | None


def _machine_table() -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "doc"} for t in TRANSITIONS]


# One way a trigger may leave a state: the destination and the conditions (predicate, expected result) that must
# all hold, in the machine's order.
Option = tuple[TaskState, tuple[tuple[Callable[[Any], Any], bool], ...]]


def fire_table(machine: Machine) -> dict[str, dict[TaskState, tuple[Option, ...]]]:
    """The machine's events as plain data: trigger -> source state -> its transitions in order.

    Read off the built Machine (its events, transitions and conditions), so it is the machine, not a second copy
    of TRANSITIONS; tests/test_lifecycle.py holds the two equal for every (state, trigger, model)."""
    table: dict[str, dict[TaskState, tuple[Option, ...]]] = {}
    for trigger, event in machine.events.items():
        by_source: dict[TaskState, tuple[Option, ...]] = {}
        for source, transitions in event.transitions.items():
            options = []
            for tr in transitions:
                # Only what this module's table uses: no callbacks, no internal (dest None) transitions.
                assert tr.dest is not None and not (tr.prepare or tr.before or tr.after), tr
                assert all(callable(c.func) for c in tr.conditions), tr
                options.append((TaskState[tr.dest], tuple((c.func, c.target) for c in tr.conditions)))
            by_source[TaskState[source]] = tuple(options)
        table[trigger] = by_source
    assert not (machine.prepare_event or machine.finalize_event or machine.before_state_change
                or machine.after_state_change or machine.on_exception or machine.on_final)
    assert not any(st.on_enter or st.on_exit for st in machine.states.values())
    return table


class _Event:
    """What a condition reads of transitions' EventData (send_event=True): the model."""

    __slots__ = ("model",)

    def __init__(self, model: TaskModel) -> None:
        self.model = model


class Lifecycle:
    """Fires triggers on task models; no I/O, no callbacks with side effects.

    The `transitions` Machine is the source of the lifecycle; `fire` and `may` apply its table directly
    (fire_table: the same transitions, conditions and errors) because they run for every task on the engine's
    hot path; `fire_machine` goes through the Machine itself (the tests compare the two)."""

    def __init__(self) -> None:
        self.machine = Machine(
            model=None,
            states=TaskState,
            transitions=_machine_table(),
            initial=S.PENDING,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )
        self.table = fire_table(self.machine)

    def fire(self, task: TaskModel, trigger: str) -> Step:
        """Fire `trigger` on `task`; raises InvalidTransition or GuardRefused, and changes nothing then."""
        source = task.state
        by_source = self.table.get(trigger)
        if by_source is None:
            raise InvalidTransition(f"unknown trigger {trigger!r}")
        options = by_source.get(source)
        if options is None:
            raise InvalidTransition(f"{task.job_id}: {trigger} is not allowed from {source.value}")
        event = _Event(task)
        for dest, conditions in options:
            for check, target in conditions:
                if check(event) != target:
                    break
            else:
                task.state = dest
                return Step(task.job_id, trigger, source, dest, task.last_status)
        raise GuardRefused(
            f"{task.job_id}: {trigger} refused from {source.value} with remote status {task.last_status}"
        )

    def fire_machine(self, task: TaskModel, trigger: str) -> Step:
        """`fire` through the transitions Machine (the reference the fast table is tested against)."""
        source = task.state
        if trigger not in self.machine.events:
            raise InvalidTransition(f"unknown trigger {trigger!r}")
        try:
            ok = self.machine.events[trigger].trigger(task)
        except MachineError as exc:
            raise InvalidTransition(f"{task.job_id}: {trigger} is not allowed from {source.value}") from exc
        if not ok:
            raise GuardRefused(
                f"{task.job_id}: {trigger} refused from {source.value} with remote status {task.last_status}"
            )
        return Step(task.job_id, trigger, source, task.state, task.last_status)

    def may(self, task: TaskModel, trigger: str) -> bool:
        """Would `trigger` fire now? (conditions are pure, so asking is safe)"""
        options = self.table.get(trigger, {}).get(task.state)
        if not options:
            return False
        event = _Event(task)
        return any(all(check(event) == target for check, target in conditions) for _, conditions in options)

    def may_machine(self, task: TaskModel, trigger: str) -> bool:
        """`may` through the transitions Machine (the reference for the tests)."""
        event = self.machine.events.get(trigger)
        if event is None:
            return False
        for transition in event.transitions.get(task.state.name, []):
            data = EventData(self.machine.get_state(task.state), event, self.machine, task, (), {})
            if all(c.check(data) for c in transition.conditions):
                return True
        return False

    def delete(self, task: TaskModel) -> tuple[Step, DeletePermit]:
        """Fire the guarded `delete` (or `redelete` when reconciling) and return the permit the client requires."""
        step = self.fire(task, "redelete" if task.state is S.DELETING else "delete")
        assert task.last_status in DELETABLE  # the guard just held; belt and braces
        return step, issue_permit(task.job_id, task.last_status)


def mermaid() -> str:
    """The state diagram, derived from TRANSITIONS (the README embeds it)."""
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        for src in sources:
            dest = src if t["dest"] == "=" else t["dest"]
            lines.append(f"    {src.value} --> {dest.value}: {t['trigger']}")
    for s in sorted(TERMINAL, key=lambda s: s.value):
        lines.append(f"    {s.value} --> [*]")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m orchestrator.lifecycle: print the diagram for the README
    print(mermaid())
