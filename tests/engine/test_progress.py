"""The progress book: its Snapshot counts every task exactly as a plain recount does (held against the simple
reference over random task sets), and reports are rate-limited by the fake clock, a forced one always sent."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.clock import FakeClock
from orchestrator.drs.codes import ALL_STATUSES, RELEASE_FAILED
from orchestrator.engine import progress as progress_module
from orchestrator.engine.decide import Tracked, stop_plan
from orchestrator.engine.progress import MAX_EVERY, ProgressBook, next_action
from orchestrator.engine.tuning import Tuning
from orchestrator.lifecycle import ACTIVE, TERMINAL, TaskModel, TaskState
from orchestrator.snapshot import Snapshot, WaitGroup

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def reference(book: ProgressBook, tracked: Iterable[Tracked], counts: dict[str, int] | None) -> dict[str, object]:
    """The snapshot's task figures recounted the plain way (as the book did before it was made lean)."""
    local: Counter[str] = Counter()
    groups: dict[str, tuple[Counter[str], Counter[str]]] = defaultdict(lambda: (Counter(), Counter()))
    targets: dict[str, Counter[str]] = defaultdict(Counter)
    for t in tracked:
        local[t.state.value] += 1
        if t.target:
            targets[t.target][t.state.value] += 1
        if t.state not in TERMINAL:
            actions, remote = groups[t.state.value]
            if t.observe:
                action = "read"
            elif t.state in (TaskState.DELETABLE, TaskState.DELETING):
                action = "delete"
            elif t.state is TaskState.UNSUBSCRIBING:
                action = "unsubscribe"
            else:
                action = stop_plan(t, book.tuning).kind
            actions[action] += 1
            if t.last_status:
                remote[t.last_status] += 1
    all_counts = Counter(counts) if counts is not None else local + book.settled_elsewhere
    return {"counts": dict(all_counts),
            "groups": tuple(WaitGroup(s.value, sum(groups[s.value][0].values()), dict(groups[s.value][0]),
                                      dict(groups[s.value][1])) for s in ACTIVE if s.value in groups),
            "targets": {k: dict(v) for k, v in targets.items()}}


TASKS = st.lists(st.builds(
    lambda i, state, status, observe, attempts, target: Tracked(
        model=TaskModel(f"j{i}", state, status), planned_action="stop_then_delete", phase_started=NOW,
        next_check=NOW, observe=observe, stop_attempts=attempts, target=target),
    st.integers(0, 10**6), st.sampled_from(list(TaskState)), st.sampled_from([*ALL_STATUSES, None]),
    st.booleans(), st.integers(0, 3), st.sampled_from([None, "", "a", "b"])), max_size=40)


@given(TASKS, st.sampled_from([None, {"deleted": 3, "pending": 1}]),
       st.sampled_from([Counter(), Counter({"deleted": 2, "skipped": 1})]), st.sampled_from([
           Tuning(), Tuning(force=True), Tuning(no_force=True), Tuning(terminate_attempts=1)]))
@settings(max_examples=300, deadline=None)
def test_snapshot_matches_a_plain_recount(tracked: list[Tracked], counts: dict[str, int] | None,
                                          elsewhere: Counter[str], tuning: Tuning) -> None:
    seen: list[Snapshot] = []
    book = ProgressBook(FakeClock(NOW), tuning, seen.append)
    book.settled_elsewhere = elsewhere
    book.emit(tracked, calls=7, client_stats={"retries": 1, "transport": 2}, counts=counts, force=True)
    (snap,) = seen
    expected = reference(book, tracked, counts)
    assert snap.counts == expected["counts"] and list(snap.counts) == list(expected["counts"])  # type: ignore[arg-type]
    assert snap.groups == expected["groups"]
    assert [(g.state, list(g.next_actions.items()), list(g.remote.items())) for g in snap.groups] == [
        (g.state, list(g.next_actions.items()), list(g.remote.items())) for g in expected["groups"]]  # type: ignore[attr-defined]
    assert snap.targets == expected["targets"]
    assert snap.total == sum(expected["counts"].values())  # type: ignore[attr-defined]
    assert (snap.calls, snap.retries, snap.errors) == (7, 1, 2)


def test_next_action_names_the_stop_plan() -> None:
    for tuning in (Tuning(), Tuning(force=True), Tuning(no_force=True)):
        for status in (RELEASE_FAILED, "INCRE_TRANSFER_STARTED"):
            for attempts in range(4):
                for state in (TaskState.PENDING, TaskState.RELEASING, TaskState.STOPPING):
                    t = Tracked(model=TaskModel("j", state, status), planned_action="stop_then_delete",
                                phase_started=NOW, next_check=NOW, observe=False, stop_attempts=attempts)
                    assert next_action(t, tuning) == stop_plan(t, tuning).kind


def test_reports_are_rate_limited_and_a_forced_one_always_goes_out() -> None:
    clock, seen = FakeClock(NOW), []
    book = ProgressBook(clock, Tuning(), seen.append, every=0.25)
    tracked = [Tracked(model=TaskModel("j"), planned_action="stop_then_delete", phase_started=NOW, next_check=NOW)]
    book.emit(tracked, calls=0, client_stats={})
    book.emit(tracked, calls=1, client_stats={})
    assert [s.calls for s in seen] == [0]
    book.emit(tracked, calls=2, client_stats={}, force=True)
    clock.advance(0.25)
    book.emit(tracked, calls=3, client_stats={})
    assert [s.calls for s in seen] == [0, 2, 3]


@pytest.mark.parametrize(("cost", "gap"), [(0.001, 0.25), (0.05, 1.0), (1.0, MAX_EVERY)])
def test_long_counts_report_less_often(monkeypatch: pytest.MonkeyPatch, cost: float, gap: float) -> None:
    """A snapshot that took `cost` seconds of CPU to count is followed by one `gap` later at the soonest."""
    ticks = iter(x * cost for x in range(100))
    monkeypatch.setattr(progress_module, "process_time", lambda: next(ticks))
    clock, seen = FakeClock(NOW), []
    book = ProgressBook(clock, Tuning(), seen.append, every=0.25)
    book.emit([], calls=0, client_stats={})
    clock.advance(gap - 0.01)
    book.emit([], calls=1, client_stats={})
    clock.advance(0.01)
    book.emit([], calls=2, client_stats={})
    assert [s.calls for s in seen] == [0, 2]


def test_the_snapshot_says_what_is_left_to_wait_out_for_the_eta() -> None:
    """The youngest wait: seconds since the first stop of the most recently stopped task still waiting on its
    release (a task stopped before this process took it over counts from its phase's start); unstarted: active
    tasks whose stop is still to be sent. Deletable, deleting and settled tasks wait for neither."""
    clock, seen = FakeClock(NOW), []
    book = ProgressBook(clock, Tuning(), seen.append)

    def task(job: str, state: TaskState, *, started: float = 0.0, planned: str = "stop_then_delete") -> Tracked:
        return Tracked(model=TaskModel(job, state), planned_action=planned,
                       phase_started=NOW + timedelta(seconds=started), next_check=NOW)

    tracked = [task("a", TaskState.RELEASING), task("b", TaskState.RELEASING), task("c", TaskState.PENDING),
               task("d", TaskState.PENDING), task("e", TaskState.PENDING, planned="delete"),
               task("f", TaskState.DELETABLE), task("g", TaskState.DELETED), task("h", TaskState.RELEASING, started=5)]
    book.stop_sent = {"a": NOW + timedelta(seconds=2), "b": NOW + timedelta(seconds=12),
                      "c": NOW + timedelta(seconds=3)}  # c: busy, back in pending after its stop
    clock.advance(30)
    book.emit(tracked, calls=0, client_stats={}, force=True)
    assert (seen[-1].youngest_wait, seen[-1].unstarted) == (18.0, 1)  # b stopped at 12 s; d is still to stop
    book.stop_sent = {}
    book.emit([task("h", TaskState.RELEASING, started=5), task("f", TaskState.DELETABLE)], calls=0, client_stats={},
              force=True)
    assert (seen[-1].youngest_wait, seen[-1].unstarted) == (25.0, 0)  # resumed: h counts from its phase's start
    book.emit([task("f", TaskState.DELETING), task("g", TaskState.DELETED)], calls=0, client_stats={}, force=True)
    assert (seen[-1].youngest_wait, seen[-1].unstarted) == (None, 0)


def test_a_parent_waiting_for_its_re_edit_children_says_so_not_the_stop_it_will_not_send_yet() -> None:
    clock, seen = FakeClock(NOW), []
    book = ProgressBook(clock, Tuning(), seen.append)
    book.children = {"parent": {"kid"}, "other": {"gone-kid"}}

    def task(job: str, state: TaskState) -> Tracked:
        return Tracked(model=TaskModel(job, state, "INCRE_TRANSFER_STARTED"), planned_action="stop_then_delete",
                       phase_started=NOW, next_check=NOW, observe=False)

    book.emit([task("parent", TaskState.PENDING), task("kid", TaskState.RELEASING),
               task("other", TaskState.PENDING), task("gone-kid", TaskState.DELETED)], calls=0, client_stats={},
              force=True)
    (pending,) = [g for g in seen[-1].groups if g.state == "pending"]
    assert dict(pending.next_actions) == {"after_children": 1, "terminate": 1}
    book.emit([task("parent", TaskState.PENDING), task("kid", TaskState.DELETED)], calls=0, client_stats={},
              force=True)
    (pending,) = [g for g in seen[-1].groups if g.state == "pending"]
    assert dict(pending.next_actions) == {"terminate": 1}  # its child is gone: the parent's stop is next
