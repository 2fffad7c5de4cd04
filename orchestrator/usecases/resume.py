"""Continuing a run: pick it, own it, plan what was never planned (a kill while planning), then execute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from orchestrator.clock import Clock, RealClock
from orchestrator.config import Settings
from orchestrator.engine import Tuning
from orchestrator.engine.feed import unplanned_targets
from orchestrator.engine.reopen import reopen_timed_out, timed_out_ids
from orchestrator.errors import ConfigError, DeadlineReached, SelectionError
from orchestrator.selection import Selection, Target
from orchestrator.snapshot import Snapshot
from orchestrator.store.repo import Context, Event, Store
from orchestrator.store.schema import Run
from orchestrator.usecases import rails
from orchestrator.usecases.connection import (
    Connection,
    connect,
    connect_targets,
    make_client,
    settings_for_run,
    tuning_for_run,
)
from orchestrator.usecases.context import new_context
from orchestrator.usecases.recording import (
    add_plan,
    needs_planning,
    note_unplanned,
    opening_for_resume,
    timed_out_planning,
)
from orchestrator.usecases.summary import RunSummary, summarize
from orchestrator.usecases.teardown import (
    ClientFactory,
    execute_run,
    leave_run,
    plan_targets,
    recorded_targets,
    single_target,
)


def find_run(store: Store, run_id: str) -> Run:
    """A run by id or unique prefix; a SelectionError naming the input otherwise."""
    run = store.find_run(run_id)
    if run is None:
        raise SelectionError(f"no run {run_id!r} in {_safe(store)} (see `drs-teardown status`)")
    return run


def pick_run(store: Store, run_id: str | None) -> Run | None:
    """The named run, else the latest unfinished one, else the latest finished run with tasks that timed out (and
    that no later run has taken up since); None when there is nothing to resume. Runs whose owner died are first
    recorded as interrupted (the run row only: the trail's gap shows until `resume` writes run_resumed)."""
    store.settle_dead_runs()
    if run_id:
        return find_run(store, run_id)
    unfinished = store.unfinished_runs()
    if unfinished:
        return unfinished[0]
    reopenable = store.reopenable_runs(limit=1)
    return reopenable[0] if reopenable else None


def _safe(store: Store) -> str:
    """The store's URL without its password (never in any output)."""
    try:
        return make_url(store.url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say which store without echoing it
        return "the database"


@dataclass
class Resumption:
    """A run made ready to continue: owned by this process, with its settings, tuning and connections."""

    store: Store
    run: Run
    settings: Settings
    tuning: Tuning
    ctx: Context
    conns: list[Connection]
    targets: list[Target] | None
    clock: Clock = field(default_factory=RealClock)
    claim: Any = None
    client_factory: ClientFactory = make_client

    async def execute(self, *, progress: Callable[[Snapshot], None] | None = None,
                      stop_event: asyncio.Event | None = None) -> RunSummary:
        if self.run.status == "finished":  # finished by its owner between our pick and our claim: nothing to do
            if self.claim is not None:
                self.claim.release()
            return summarize(self.store, self.run.id)
        # A resume gets a fresh --timeout budget, bounding its planning and its work alike.
        deadline = self.clock.monotonic() + self.tuning.timeout
        try:
            if needs_planning(self.run):
                try:
                    await self._plan_the_rest(deadline)
                except DeadlineReached as exc:
                    raise timed_out_planning(self.store, self.run.id, self.ctx, self.clock.now(),
                                             self.tuning.timeout, exc) from exc
            self.store.set_run(self.run.id, status="running")
            return await execute_run(self.store, self.conns, self.targets, self.settings, self.ctx, self.tuning,
                                     self.clock, self.run.id, fresh=False, progress=progress,
                                     stop_event=stop_event, client_factory=self.client_factory, deadline=deadline)
        finally:
            if self.claim is not None:
                self.claim.release()
            leave_run(self.store, self.ctx, self.clock)

    async def _plan_the_rest(self, deadline: float) -> None:
        """The run was killed while planning, or some of its targets failed to plan: plan them (the recorded
        selection), add what was never recorded. A target that fails again stays unplanned, said so."""
        targets = self.targets or [single_target(self.settings, Selection.from_dict(self.run.selection))]
        conns = self.conns
        unplanned = unplanned_targets(self.run.options)
        if unplanned and self.targets is not None and self.run.plan_hash is not None:
            # Only the targets that failed (the others' plans are recorded).
            pairs = [(t, c) for t, c in zip(targets, conns, strict=True) if t.label in unplanned]
            targets, conns = [t for t, _ in pairs], [c for _, c in pairs]
        run_plan = await plan_targets(self.settings, targets, conns, self.clock,
                                      several=self.targets is not None, client_factory=self.client_factory,
                                      deadline=deadline)
        rails.check_max_targets(len(run_plan.items), self.settings.max_targets)
        add_plan(self.store, self.run.id, run_plan.as_plan(), self.ctx, self.clock.now(), consent=self.run.consent,
                 targets=run_plan.job_targets(), plan_hash=self.run.plan_hash)
        note_unplanned(self.store, self.run.id, self.ctx, self.clock.now(), run_plan.failed,
                       planned=[t.label for t in targets])


def prepare_resume(store: Store, run: Run, settings: Settings, env: Mapping[str, str], flags: Mapping[str, Any], *,
                   on_token: Callable[[str], None] | None = None, clock: Clock | None = None) -> Resumption:
    """Own `run` (refused, naming the holder, while another live process works it) and get it ready."""
    if settings.project_id and settings.project_id != run.project_id and not run.selection.get("targets"):
        raise ConfigError(f"run {run.id} is for project {run.project_id}, the settings say {settings.project_id}")
    settings = settings_for_run(settings, run)
    targets = recorded_targets(run.selection)
    conns: Sequence[Connection] = (connect_targets(settings, env, targets, on_token=on_token) if targets
                                   else [connect(settings, env, on_token=on_token)])
    ctx = new_context(conns[0].identity, ticket=settings.ticket, reason=settings.reason)
    claim = rails.own_run(store, run.id, ctx.worker)  # before any intent: refused while another process works it
    tuning = tuning_for_run(settings, run.options, flags)
    clock = clock or RealClock()
    run = store.run(run.id) or run  # as it is now that we hold it: its owner may have finished it meanwhile
    reopen = timed_out_ids(store, run.id)
    if run.status == "finished" and not reopen:
        return Resumption(store, run, settings, tuning, ctx, list(conns), targets, clock, claim)
    opening = [*opening_for_resume(store, run), Event(trigger="run_resumed", detail=(
        f"by {ctx.worker} ({run.status}" + (f"; re-opening {len(reopen)} timed-out task(s)" if reopen else "") + ")"))]
    if not reopen:
        store.append_events(run.id, ctx, opening, clock.now())
        return Resumption(store, run, settings, tuning, ctx, list(conns), targets, clock, claim)
    try:
        # Its timed-out tasks become active again: not while another unfinished run has taken one up since.
        with rails.creating_runs(store, ctx.worker):
            rails.check_overlap(store, reopen, exclude=run.id)
            if run.status == "finished":  # unfinished from here on: a kill now leaves it for `resume` again
                store.set_run(run.id, status="running", finished_at=None, exit_code=None)
            store.append_events(run.id, ctx, opening, clock.now())
            reopen_timed_out(store, run.id, ctx, clock.now())
    except BaseException:
        claim.release()
        raise
    run = store.run(run.id) or run
    return Resumption(store, run, settings, tuning, ctx, list(conns), targets, clock, claim)
