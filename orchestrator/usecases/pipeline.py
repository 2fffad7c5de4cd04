"""The plan pipelined into the run (`run --yes` without `--plan`): the run is recorded before planning, and a
task's stop goes out as soon as its detail batch has been read and decided, while the rest is still read.

The rails hold as in the two-phase path: --max-targets is checked on the selection's size before any detail
read (and on the whole plan, children included, before the tasks that wait for it are recorded); each batch is
checked for overlap with unfinished runs and recorded (tasks and `plan` records) before the engine may act on
it, under the same lock that serialises run creation. The whole plan is in the trail when planning ends
(`run_started` with its hash and counts). `--plan FILE` keeps the two-phase review (drift refused, nothing sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from orchestrator.engine.feed import Feed
from orchestrator.errors import ConfigError, DeadlineReached, Interrupted, Refused, SelectionError
from orchestrator.planning import PlanItem
from orchestrator.selection import Target
from orchestrator.snapshot import Snapshot
from orchestrator.store.repo import Event
from orchestrator.store.schema import Task
from orchestrator.usecases import rails
from orchestrator.usecases.connection import Connection
from orchestrator.usecases.recording import (
    begin_run,
    discard_run,
    note_unplanned,
    open_run,
    records_before_planning,
    start_event,
    task_rows,
    timed_out_planning,
)
from orchestrator.usecases.summary import RunSummary
from orchestrator.usecases.teardown import (
    RunPlan,
    TargetPlan,
    Teardown,
    checked,
    execute_run,
    plan_target,
    with_billing,
)


def can_pipeline(td: Teardown) -> bool:
    """Consent given up front, no reviewed plan, and a store that records a run before planning."""
    return bool(td.consent) and td.reviewed is None and td.store is not None and records_before_planning(td.store)


async def pipelined(td: Teardown, *, progress: Callable[[Snapshot], None] | None = None,
                    stop_event: asyncio.Event | None = None,
                    on_recorded: Callable[[str], None] | None = None,
                    on_opened: Callable[[str], None] | None = None) -> RunSummary:
    """Record the run, then plan and execute at once; returns the run's summary (the plan is `td.run_plan`).

    `on_recorded(run_id)`: the bare run row is written (before the first list call); `on_opened(run_id)`: its
    selection is known and not empty, its trail opens. A selection that matched nothing removes the bare row:
    no run is recorded, and the summary is empty (`td.run_id` is None then).

    A planning failure that is not one target's own (a rail, the store, the deadline) stops the engine: the run
    ends interrupted (resumable; `resume` plans what was never recorded) and the failure is raised."""
    if not can_pipeline(td):
        raise ConfigError("the pipelined run needs consent up front, no --plan and a store that records first")
    assert td.store is not None
    stop_event = stop_event or asyncio.Event()
    conns = td.connect()
    assert td.ctx is not None
    consent = td.consent = with_billing(td.settings, td.consent or "")
    td.run_id = begin_run(td.store, td.ctx, td.tuning, td.clock.now(), project_id=conns[0].project_id,
                          endpoint=conns[0].endpoint, selection=td.selection_before_planning(), consent=consent,
                          options={"missing_ok": td.missing_ok, "pipelined": True})
    td.claim = rails.own_run(td.store, td.run_id, td.ctx.worker)
    if on_recorded is not None:
        on_recorded(td.run_id)
    feed = Feed()
    recorder = Recorder(td, feed, on_opened)
    planner = asyncio.ensure_future(recorder.plan(conns))
    try:
        summary = await execute_run(td.store, conns, td.targets if td.several else None, td.settings, td.ctx,
                                    td.tuning, td.clock, td.run_id, fresh=True, progress=progress,
                                    stop_event=stop_event, client_factory=td.client_factory, deadline=td.deadline,
                                    feed=feed, target_of=recorder.owner)
    finally:
        cut_short = not planner.done()  # the engine stopped first (a signal, an abort): planning stops too
        if cut_short:
            planner.cancel()
        with contextlib.suppress(BaseException):
            await planner
        td.release()
    if isinstance(feed.failure, DeadlineReached):
        raise timed_out_planning(td.store, td.run_id, td.ctx, td.clock.now(), td.settings.timeout,
                                 feed.failure) from feed.failure
    if feed.failure is not None and not (cut_short and isinstance(feed.failure, asyncio.CancelledError)):
        raise feed.failure
    if feed.discarded:
        td.run_id = None
    if stop_event.is_set() and not recorder.recorded:
        raise Interrupted(f"interrupted while planning: nothing was sent; run {td.run_id} is resumable: "
                          f"drs-teardown resume {td.run_id}")
    return summary


TASK_DEFAULTS: dict[str, Any] = dict.fromkeys(Task.__table__.columns.keys())


class Recorder:
    """Plans every target into the run: each decided batch is checked, recorded, then fed to the engine."""

    def __init__(self, td: Teardown, feed: Feed, on_opened: Callable[[str], None] | None = None) -> None:
        self.td, self.feed, self.on_opened = td, feed, on_opened
        self.opened = False  # the run's trail has its first record (`run_recorded`)
        feed.before_end = self._open
        self.selected = 0  # the selection's size over all targets (what --max-targets counts first)
        self.owner: dict[str, str] = {}  # job id -> target label (a task belongs to one target)
        self.recorded: set[str] = set()
        # --max-targets counts the selection over every target before any target reads a detail: each target
        # waits here until every target has resolved its selection (or failed).
        self._resolving = len(td._targets)
        self._resolved = asyncio.Event()

    async def plan(self, conns: Sequence[Connection]) -> None:
        td = self.td
        try:
            parts = await asyncio.gather(*(self._target(t, c) for t, c in zip(td._targets, conns, strict=True)))
            run_plan = checked(RunPlan(tuple(parts), td.several))
            td.run_plan = run_plan
            if run_plan.nothing_matched() and self._discard():
                return
            rails.check_max_targets(len(run_plan.items), td.settings.max_targets)  # children included
            for part in run_plan.parts:
                self._record(part.plan.items, part.target.label)  # what the stream did not record yet
            self._finish(run_plan)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._open()  # the run stays (interrupted or refused): its trail says it was recorded
            if isinstance(exc, Refused) and not self.recorded:
                self._refused(exc)
            self.feed.finish(exc)
            raise
        self.feed.finish()

    def _open(self) -> None:
        """The selection is known and not empty (or the run stays for another reason): the trail opens."""
        td = self.td
        if self.opened or self.feed.discarded:
            return
        assert td.store is not None and td.ctx is not None and td.run_id is not None
        open_run(td.store, td.run_id, td.ctx, td.clock.now(), td.consent)
        self.opened = True
        if self.on_opened is not None:
            self.on_opened(td.run_id)

    def _discard(self) -> bool:
        """Nothing matched: the bare run row goes (no run recorded) and the engine ends without a word."""
        td = self.td
        assert td.store is not None
        if self.opened or self.recorded or not discard_run(td.store, td.run_id or ""):
            return False
        td.exchanges.clear()  # the list calls of a run that is not recorded
        self.feed.finish(discarded=True)
        return True

    async def _target(self, target: Target, conn: Connection) -> TargetPlan:
        td = self.td
        arrived = False

        def arrive() -> None:
            nonlocal arrived
            if not arrived:
                arrived = True
                self._resolving -= 1
                if not self._resolving:
                    self._resolved.set()

        async def on_selected(ids: Sequence[str], children: Mapping[str, Sequence[str]]) -> None:
            self.selected += len(ids) + sum(len(k) for k in children.values())
            arrive()
            await self._resolved.wait()
            if self.selected:
                self._open()  # before any rail may refuse it: a refused run keeps its trail
            rails.check_max_targets(self.selected, td.settings.max_targets)

        async def on_items(items: list[PlanItem]) -> None:
            self._record(items, target.label)

        try:
            return await plan_target(td.settings, target, conn, td.clock, several=td.several,
                                     recorder=td.exchanges.append, client_factory=td.client_factory,
                                     deadline=td.deadline, on_selected=on_selected, on_items=on_items)
        finally:
            arrive()  # a target that failed before its selection was known does not hold the others

    def _record(self, items: Sequence[PlanItem], label: str) -> None:
        """Check a batch (one target per task, no overlap with an unfinished run), record it, feed it."""
        td = self.td
        assert td.store is not None and td.ctx is not None and td.run_id is not None
        for item in items:
            if self.owner.setdefault(item.job_id, label) != label:
                raise SelectionError(f"task {item.job_id} is selected by the targets {self.owner[item.job_id]} "
                                     f"and {label}: a task belongs to one target")
        items = [i for i in items if i.job_id not in self.recorded]
        if not items:
            return
        self._open()
        now = td.clock.now()
        rows, events = task_rows(td.run_id, items, now, {i.job_id: label for i in items} if td.several else None)
        with rails.creating_runs(td.store, td.ctx.worker):
            rails.check_overlap(td.store, [i.job_id for i in items if i.action in rails.ACTIONABLE],
                                exclude=td.run_id)
            td.store.add_tasks(td.run_id, rows, td.ctx, events, now)  # type: ignore[attr-defined]
        self.recorded.update(i.job_id for i in items)
        self.feed.push(SimpleNamespace(**{**TASK_DEFAULTS, **row}) for row in rows)  # what adopt reads; no ORM

    def _finish(self, run_plan: RunPlan) -> None:
        td = self.td
        assert td.store is not None and td.ctx is not None and td.run_id is not None
        self._open()  # (a run whose only target failed to plan, or that matched nothing and stays)
        plan = run_plan.as_plan()
        td.store.append_events(td.run_id, td.ctx, [start_event(plan, td.consent or "")], td.clock.now())
        values: dict[str, Any] = {"status": "running", "plan_hash": run_plan.hash}
        if td.several:
            values["selection"] = run_plan.recorded_selection()
        td.store.set_run(td.run_id, **values)
        if run_plan.failed:
            note_unplanned(td.store, td.run_id, td.ctx, td.clock.now(), run_plan.failed)
        td.store.record_exchanges(td.run_id, td.ctx.worker, td.exchanges)
        td.exchanges.clear()

    def _refused(self, exc: Refused) -> None:
        """A rail refused before any task was recorded: the run ends here, exit 2, with nothing sent."""
        td = self.td
        assert td.store is not None and td.ctx is not None and td.run_id is not None
        with contextlib.suppress(Exception):
            td.store.finish_run(td.run_id, td.ctx, Event(trigger="run_finished", outcome="2", detail=exc.message),
                                td.clock.now(), 2)
