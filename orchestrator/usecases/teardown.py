"""A teardown, step by step: select -> plan -> (consent) -> record -> execute -> summarise, with the rails.

`Teardown` is what the CLI's `run` and `plan`, `demo` and a Python runbook all drive; the CLI only adds its
prompt between `plan()` and `record()`. `execute()` is the one place the engine is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.clock import Clock, RealClock
from orchestrator.config import Settings
from orchestrator.drs.client import DrsClient
from orchestrator.drs.endpoints import resolve_bss_endpoint
from orchestrator.drs.pacing import process_pacer
from orchestrator.engine import Engine, Tuning
from orchestrator.engine.feed import Feed
from orchestrator.errors import (
    AuthError,
    ConfigError,
    DeadlineReached,
    DrsError,
    EngineAbort,
    Interrupted,
    Refused,
    SelectionError,
)
from orchestrator.planning import PLAN_FORMAT, Decided, Plan, PlanItem, Selected, action_counts, make_plan
from orchestrator.selection import Selection, Target
from orchestrator.snapshot import Snapshot
from orchestrator.store.repo import Context, Event, Store
from orchestrator.usecases import rails
from orchestrator.usecases.connection import (
    Connection,
    connect,
    connect_targets,
    make_client,
    settings_for_target,
    tuning_from,
)
from orchestrator.usecases.context import new_context
from orchestrator.usecases.recording import (
    add_plan,
    begin_run,
    discard_run,
    note_unplanned,
    open_run,
    records_before_planning,
    start_run,
    timed_out_planning,
)
from orchestrator.usecases.routing import TargetRouter
from orchestrator.usecases.summary import RunSummary, summarize, targets_of
from orchestrator.wire import Exchange


@dataclass(frozen=True)
class TargetPlan:
    """One target's plan."""

    target: Target
    conn: Connection
    plan: Plan
    error: str | None = None  # its planning failed (401, unreachable, 403 project...): resume plans it again
    exc: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RunPlan:
    """The plan of one run: one part per target (one part without a targets file)."""

    parts: tuple[TargetPlan, ...]
    several: bool = False  # from a targets file: the JSON names each target

    @property
    def items(self) -> tuple[PlanItem, ...]:
        return tuple(i for p in self.parts for i in p.plan.items)

    @property
    def project_ids(self) -> list[str]:
        return [p.conn.project_id for p in self.parts]

    def counts(self) -> dict[str, int]:
        return action_counts(self.items)

    @property
    def hash(self) -> str:
        if not self.several:
            return self.parts[0].plan.hash
        body = "\n".join(f"{p.target.label}:{p.plan.hash}" for p in self.parts)
        return hashlib.sha256(body.encode()).hexdigest()

    def job_targets(self) -> dict[str, str]:
        return {i.job_id: p.target.label for p in self.parts for i in p.plan.items} if self.several else {}

    def as_plan(self) -> Plan:
        """One Plan over every target (the first target's project and endpoint name it)."""
        first = self.parts[0].plan
        if not self.several:
            return first
        return Plan(project_id=first.project_id, endpoint=first.endpoint, selection=first.selection,
                    items=self.items, created_at=first.created_at, listed=sum(p.plan.listed for p in self.parts))

    @property
    def failed(self) -> dict[str, str]:
        """label -> why, for the targets whose planning failed."""
        return {p.target.label: p.error for p in self.parts if p.error is not None}

    def nothing_matched(self) -> str | None:
        """The message for an empty match, or None when something was selected (or a target failed)."""
        if self.items or self.failed:
            return None
        where = "; ".join(f"{p.target.selection.describe()} in project {p.conn.project_id}"
                          + (f" ({p.target.label})" if self.several else "") for p in self.parts)
        return f"nothing matched {where}"

    def to_json(self) -> dict[str, Any]:
        if not self.several:
            return self.parts[0].plan.to_json()
        items = [{**i.to_dict(), "target": p.target.label} for p in self.parts for i in p.plan.items]
        return {"format": PLAN_FORMAT, "created_at": self.parts[0].plan.created_at.isoformat(),
                "targets": [{"label": p.target.label, "endpoint": p.conn.endpoint, "project_id": p.conn.project_id,
                             "selection": p.target.selection.to_dict(), "counts": p.plan.counts(),
                             "hash": p.plan.hash, **({"error": p.error} if p.error else {})}
                            for p in self.parts],
                "items": items, "counts": self.counts(), "hash": self.hash}

    def recorded_selection(self) -> dict[str, Any]:
        """What the run row keeps, so resume and workers can work every target again."""
        if not self.several:
            return self.parts[0].plan.selection.to_dict()
        return {"targets": [{**p.target.to_dict(), "endpoint_url": p.conn.endpoint,
                             "job_ids": [i.job_id for i in p.plan.items]} for p in self.parts]}


def single_target(settings: Settings, selection: Selection) -> Target:
    return Target(label=settings.project_id or "", project_id=settings.project_id or "", selection=selection,
                  region=settings.region, endpoint=settings.endpoint)


def recorded_targets(selection: Mapping[str, Any]) -> list[Target] | None:
    """The targets a run over several targets recorded (None for a one-project run)."""
    tables = selection.get("targets")
    return [Target.from_dict(t) for t in tables] if tables else None


ClientFactory = Callable[[Connection, Settings, Clock], DrsClient]


async def plan_targets(settings: Settings, targets: Sequence[Target], conns: Sequence[Connection], clock: Clock, *,
                       several: bool, recorder: Callable[[Exchange], None] | None = None,
                       client_factory: ClientFactory = make_client, deadline: float | None = None) -> RunPlan:
    """Plan every target concurrently (read-only: list and batch-detail calls only). With several targets, one
    that fails (credentials refused, unreachable, 403 project) does not stop the others (see `plan_target`)."""
    parts = await asyncio.gather(*(plan_target(settings, t, c, clock, several=several, recorder=recorder,
                                               client_factory=client_factory, deadline=deadline)
                                   for t, c in zip(targets, conns, strict=True)))
    return checked(RunPlan(tuple(parts), several))


TARGET_FAILURES = (DrsError, AuthError)  # what one target's planning may fail with, alone


async def plan_target(settings: Settings, target: Target, conn: Connection, clock: Clock, *, several: bool,
                      recorder: Callable[[Exchange], None] | None = None, client_factory: ClientFactory = make_client,
                      deadline: float | None = None, on_selected: Selected | None = None,
                      on_items: Decided | None = None) -> TargetPlan:
    """One target's plan, read through a client of its own (`make_plan`'s hooks passed on). With several targets,
    a failure of its own (its deadline included: a target that keeps failing reads may give up before the others
    finish) is kept as its `error`: the run goes on without it and stays resumable."""
    try:
        async with client_factory(conn, settings_for_target(settings, target) if several else settings,
                                  clock) as client:
            client.recorder = recorder
            if deadline is not None:
                client.deadline = deadline  # --timeout bounds the plan's reads too
            plan = await make_plan(client, target.selection, endpoint=conn.endpoint, now=clock.now(),
                                   unsubscribe_prepaid=settings.unsubscribe_prepaid, on_selected=on_selected,
                                   on_items=on_items)
        return TargetPlan(target, conn, plan)
    except TARGET_FAILURES as exc:
        if not several:
            raise
        return TargetPlan(target, conn, Plan(project_id=conn.project_id, endpoint=conn.endpoint,
                                             selection=target.selection, items=(), created_at=datetime.now(UTC)),
                          error=f"planning failed: {type(exc).__name__}: {exc}", exc=exc)


def checked(run_plan: RunPlan) -> RunPlan:
    """Every target failed: nothing can go on, the first failure is the command's error."""
    if run_plan.parts and all(p.exc is not None for p in run_plan.parts):
        raise run_plan.parts[0].exc  # type: ignore[misc]
    return run_plan


@dataclass
class Teardown:
    """One teardown. `consent` known up front (e.g. "yes-flag") lets a store that can records the run before
    planning; otherwise the caller approves after `plan()` (the CLI's prompt) and the run is recorded then."""

    settings: Settings
    env: Mapping[str, str]
    selection: Selection | None = None
    targets: list[Target] | None = None  # from a targets file
    reviewed: Plan | None = None
    reviewed_source: str = "the plan file"
    consent: str | None = None
    missing_ok: bool = False
    clock: Clock = field(default_factory=RealClock)
    on_token: Callable[[str], None] | None = None
    store: Store | None = None
    client_factory: ClientFactory = make_client  # the seam: tests hand in clients over their own transport
    run_id: str | None = None
    run_plan: RunPlan | None = None
    claim: Any = None
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.deadline = self.clock.monotonic() + self.settings.timeout  # the command's --timeout budget
        if self.selection is None and self.targets is None and self.reviewed is not None:
            self.selection = self.reviewed.selection
        if (self.selection is None) == (self.targets is None):
            raise ConfigError("give a selection or a targets file (one of them)")
        if self.reviewed is not None and self.targets is not None:
            raise ConfigError("--plan and --targets cannot be combined: a reviewed plan names its own tasks")
        self.tuning: Tuning = tuning_from(self.settings)
        self._targets = self.targets or [single_target(self.settings, self.selection or Selection())]
        self.conns: list[Connection] = []
        self.ctx: Context | None = None

    @property
    def several(self) -> bool:
        return self.targets is not None

    def connect(self) -> list[Connection]:
        if self.settings.unsubscribe_prepaid:
            bss_endpoint(self.settings)  # a missing or bad BSS endpoint is refused before any call
        if not self.conns:
            self.conns = (connect_targets(self.settings, self.env, self._targets, on_token=self.on_token)
                          if self.several else [connect(self.settings, self.env, on_token=self.on_token)])
            self.ctx = new_context(self.conns[0].identity, ticket=self.settings.ticket, reason=self.settings.reason)
        return self.conns

    def _options(self) -> dict[str, Any]:
        return {"missing_ok": self.missing_ok}

    async def plan(self, stop_event: asyncio.Event | None = None, *, record: bool = True,
                   check: bool = True) -> RunPlan:
        """Connect, plan every target, check --max-targets and drift. With consent given up front and a store
        that can, the run is recorded first, so a kill while planning leaves a resumable run."""
        try:
            return await self._plan(stop_event, record=record, check=check)
        except DeadlineReached as exc:
            self.release()
            raise timed_out_planning(self.store, self.run_id, self.ctx, self.clock.now(), self.settings.timeout,
                                     exc) from exc
        except BaseException as exc:
            if isinstance(exc, Refused) and self.run_id is not None and self.store is not None \
                    and self.ctx is not None:
                # A rail refused the run recorded before planning: it ends here, with nothing sent.
                with contextlib.suppress(Exception):
                    self.store.finish_run(self.run_id, self.ctx, Event(trigger="run_finished", outcome="2",
                                                                       detail=exc.message), self.clock.now(), 2)
            self.release()
            raise

    def release(self) -> None:
        """Let go of the run (another process may work it now); the OS would at exit anyway."""
        if self.claim is not None:
            self.claim.release()
            self.claim = None
        if self.store is not None and self.ctx is not None:
            leave_run(self.store, self.ctx, self.clock)

    async def _plan(self, stop_event: asyncio.Event | None, *, record: bool, check: bool) -> RunPlan:
        conns = self.connect()
        if record and self.store is not None:
            self.store.settle_dead_runs()  # a run whose owner died reads interrupted (its row; the trail is untouched)
        if record and self.consent and self.store is not None and records_before_planning(self.store):
            assert self.ctx is not None
            self.run_id = begin_run(self.store, self.ctx, self.tuning, self.clock.now(),
                                    project_id=conns[0].project_id, endpoint=conns[0].endpoint,
                                    selection=self.selection_before_planning(),
                                    consent=with_billing(self.settings, self.consent),
                                    options=self._options())
            self.claim = rails.own_run(self.store, self.run_id, self.ctx.worker)
        self.run_plan = await plan_targets(self.settings, self._targets, conns, self.clock, several=self.several,
                                           recorder=self.exchanges.append, client_factory=self.client_factory,
                                           deadline=self.deadline)
        empty = self.run_plan.nothing_matched()
        if self.run_id is not None and self.store is not None and self.ctx is not None:
            if empty and discard_run(self.store, self.run_id):
                self.release()  # an empty match records no run: the bare row recorded before planning is gone
                self.run_id = None
            else:
                open_run(self.store, self.run_id, self.ctx, self.clock.now(),
                         with_billing(self.settings, self.consent or ""))
                if empty:
                    self.store.finish_run(self.run_id, self.ctx, Event(trigger="run_finished", outcome="0",
                                                                       detail=empty), self.clock.now(), 0)
        if stop_event is not None and stop_event.is_set():
            if self.run_id is not None and not empty:
                self._interrupted("interrupted while planning")
                raise Interrupted(f"interrupted while planning: nothing was sent; run {self.run_id} is "
                                  f"resumable: drs-teardown resume {self.run_id}")
            raise Interrupted("interrupted while planning: no run started, nothing was sent")
        if check:
            self.check(self.run_plan)
        return self.run_plan

    def selection_before_planning(self) -> dict[str, Any]:
        if not self.several:
            return self._targets[0].selection.to_dict()
        return {"targets": [t.to_dict() for t in self._targets]}

    def check(self, run_plan: RunPlan) -> None:
        """The rails that need only the plan: --max-targets over all targets, and drift from a reviewed plan."""
        rails.check_max_targets(len(run_plan.items), self.settings.max_targets)
        if run_plan.several:
            seen: dict[str, str] = {}
            for part in run_plan.parts:
                for item in part.plan.items:
                    if item.job_id in seen and seen[item.job_id] != part.target.label:
                        raise SelectionError(f"task {item.job_id} is selected by the targets {seen[item.job_id]} and "
                                             f"{part.target.label}: a task belongs to one target")
                    seen[item.job_id] = part.target.label
        if self.reviewed is not None:
            rails.check_drift(self.reviewed, run_plan.as_plan(), self.reviewed_source)

    def record(self, consent: str | None = None) -> str:
        """Record the run (or add the plan's tasks to the run recorded before planning); returns its id."""
        if self.run_plan is None or self.store is None or self.ctx is None:
            raise ConfigError("plan before recording: Teardown.plan() first, with a store")
        consent = consent or self.consent
        if not consent:
            raise ConfigError("no consent: pass consent= (the CLI's --yes or the typed project id)")
        consent = self.consent = with_billing(self.settings, consent)
        with rails.creating_runs(self.store, self.ctx.worker):
            rails.check_overlap(self.store, [i.job_id for i in self.run_plan.items
                                             if i.action in rails.ACTIONABLE], exclude=self.run_id)
            self._record(consent)
        if self.run_plan.failed:
            note_unplanned(self.store, self.run_id, self.ctx, self.clock.now(), self.run_plan.failed)
        self.store.record_exchanges(self.run_id, self.ctx.worker, self.exchanges)
        self.exchanges = []
        return self.run_id

    def _record(self, consent: str) -> None:
        assert self.run_plan is not None and self.store is not None and self.ctx is not None
        plan_hash = self.reviewed.hash if self.reviewed is not None else self.run_plan.hash
        if self.run_id is not None:
            add_plan(self.store, self.run_id, self.run_plan.as_plan(), self.ctx, self.clock.now(), consent=consent,
                     targets=self.run_plan.job_targets())
            if self.several:
                self.store.set_run(self.run_id, selection=self.run_plan.recorded_selection())
        else:
            self.run_id = start_run(self.store, self.run_plan.as_plan(), self.ctx, self.tuning, self.clock.now(),
                                    consent=consent, plan_hash=plan_hash,
                                    selection=self.run_plan.recorded_selection(), options=self._options(),
                                    targets=self.run_plan.job_targets())
            self.claim = rails.own_run(self.store, self.run_id, self.ctx.worker)

    def _interrupted(self, why: str) -> None:
        if self.store is not None and self.run_id is not None and self.ctx is not None:
            with contextlib.suppress(Exception):
                self.store.set_run(self.run_id, status="interrupted")
                self.store.append_events(self.run_id, self.ctx, [Event(trigger="run_interrupted", detail=why)],
                                         self.clock.now())

    async def execute(self, *, progress: Callable[[Snapshot], None] | None = None,
                      stop_event: asyncio.Event | None = None) -> RunSummary:
        if self.store is None or self.run_id is None or self.ctx is None:
            raise ConfigError("record before executing: Teardown.record() first")
        try:
            return await execute_run(self.store, self.conns, self._targets if self.several else None,
                                     self.settings, self.ctx, self.tuning, self.clock, self.run_id, fresh=True,
                                     progress=progress, stop_event=stop_event, client_factory=self.client_factory,
                                     deadline=self.deadline)
        finally:
            self.release()


def with_billing(settings: Settings, consent: str) -> str:
    """The consent recorded: --unsubscribe-prepaid is a billing action, so it is part of what was consented to."""
    if settings.unsubscribe_prepaid and "unsubscribe-prepaid" not in consent:
        consent += "+unsubscribe-prepaid"
    return consent


def leave_run(store: Store, ctx: Context, clock: Clock) -> None:
    """A shared run: this process works it no more, so the other workers' fair shares grow at once (rather than
    when its heartbeat goes stale)."""
    if store.shared:
        with contextlib.suppress(Exception):
            store.worker_finished(ctx.worker, clock.now())


def bss_endpoint(settings: Settings) -> str:
    """Where --unsubscribe-prepaid sends its billing calls: DRS_TEARDOWN_BSS_ENDPOINT, else the --bss-site's."""
    return resolve_bss_endpoint(settings.bss_site, settings.bss_endpoint, settings.insecure_http)


async def execute_run(store: Store, conns: Sequence[Connection], targets: Sequence[Target] | None,
                      settings: Settings, ctx: Context, tuning: Tuning, clock: Clock, run_id: str, *, fresh: bool,
                      wait_for_all: bool = True, progress: Callable[[Snapshot], None] | None = None,
                      stop_event: asyncio.Event | None = None,
                      client_factory: ClientFactory = make_client, deadline: float | None = None,
                      feed: Feed | None = None, target_of: Mapping[str, str] | None = None) -> RunSummary:
    """Open a client per target and work the run through the engine; `deadline` (monotonic) is the command's
    --timeout budget, already running since the command started (the engine never extends it); `feed`: planning
    still under way adds its tasks through it (the pipelined run)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            client_factory(c, settings_for_target(settings, t) if targets else settings, clock))
            for c, t in zip(conns, targets or [None] * len(conns), strict=True)]
        for c in clients:
            c.deadline = deadline
        labels = [t.label for t in targets] if targets else []
        client: DrsClient | TargetRouter = clients[0]
        kw: dict[str, Any] = {}
        if len(clients) > 1:
            by_label = dict(zip(labels, clients, strict=True))
            if "clients" in inspect.signature(Engine).parameters:  # an engine that works targets itself
                kw["clients"] = by_label
            else:
                if target_of is None:
                    run = store.run(run_id)
                    target_of = {**targets_of(run.selection if run is not None else {}),
                                 **{j: tg for j, (_, tg) in store.job_states(run_id).items() if tg}}
                client = TargetRouter(by_label, target_of)
        if tuning.unsubscribe_prepaid:
            url = bss_endpoint(settings)
            kw["bss"] = clients[0].bss(url, pacer=process_pacer(clock, settings.rate, key=url))
        if feed is not None:
            kw["feed"] = feed
        return await execute(store, client, ctx, tuning, clock, run_id, fresh=fresh,  # type: ignore[arg-type]
                             wait_for_all=wait_for_all, progress=progress, stop_event=stop_event, **kw)


async def execute(store: Store, client: DrsClient, ctx: Context, tuning: Tuning, clock: Clock, run_id: str, *,
                  fresh: bool = False, wait_for_all: bool = True,
                  progress: Callable[[Snapshot], None] | None = None,
                  stop_event: asyncio.Event | None = None,
                  clients: Mapping[str, DrsClient] | None = None, bss: Any = None,
                  feed: Feed | None = None) -> RunSummary:
    """Work the run until done, interrupted or aborted (the engine records how it ended), then summarise.

    Anything unexpected (MemoryError included) marks the run interrupted, so it stays resumable, and is raised."""
    kw: dict[str, Any] = {"clients": dict(clients)} if clients else {}
    if bss is not None:
        kw["bss"] = bss
    if feed is not None:
        kw["feed"] = feed
    engine = Engine(store, client, ctx, tuning, clock, run_id, fresh=fresh, progress=progress,
                    stop_event=stop_event or asyncio.Event(), **kw)
    try:
        await engine.run(wait_for_all=wait_for_all)
    except EngineAbort:
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            run = store.run(run_id)
            if run is not None and run.status not in ("finished", "interrupted"):
                store.set_run(run_id, status="interrupted")
        raise
    summary = summarize(store, run_id)
    run = store.run(run_id)
    if run is not None and run.status == "finished" and summary.exit_code > (run.exit_code or 0):
        store.set_run(run_id, exit_code=summary.exit_code)  # the not-found rule lives here, above the engine
    summary.extra = {"api_calls": engine.calls, "stats": dict(engine.stats), "client": dict(client.stats)}
    return summary
