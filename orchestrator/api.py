"""The programmatic front door: connect, plan, run, resume, work, summarise. The CLI is a thin layer on this."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.clock import Clock
from orchestrator.config import Settings
from orchestrator.drs.auth import DrsAuth, resolve_credentials
from orchestrator.drs.client import DrsClient
from orchestrator.drs.endpoints import check_endpoint_url, resolve_endpoints
from orchestrator.drs.pacing import process_pacer
from orchestrator.engine import Engine, Tuning
from orchestrator.engine.completeness import left_behind
from orchestrator.errors import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    ConfigError,
)
from orchestrator.lifecycle import OUTCOMES, exit_code_for, outcome_of
from orchestrator.planning import Plan, Selection, make_plan
from orchestrator.progress import Snapshot
from orchestrator.store.models import Run
from orchestrator.store.repo import Context, Store


@dataclass(frozen=True)
class Connection:
    """Where and as whom to call DRS."""

    endpoint: str
    project_id: str
    auth: httpx.Auth | None
    identity: str
    verify: bool | str = True


def connect(settings: Settings, env: Mapping[str, str], clock: Clock | None = None, *,
            on_token: Callable[[str], None] | None = None) -> Connection:
    """Resolve endpoint, project and credentials; every problem is a ConfigError naming the setting.

    `on_token` sees each IAM token fetched at run time (the CLI adds it to the log redactor)."""
    endpoints = resolve_endpoints(settings.region, settings.endpoint, settings.iam_endpoint)
    endpoint = check_endpoint_url(endpoints.drs, insecure_http=settings.insecure_http, what="DRS endpoint")
    if not settings.project_id:
        raise ConfigError("no project id: set DRS_TEARDOWN_PROJECT_ID (or [drs] project_id in the config file)")
    auth: DrsAuth = resolve_credentials(env, settings.auth, project_id=settings.project_id,
                                        region=settings.region, iam_endpoint=endpoints.iam,
                                        insecure_http=settings.insecure_http, on_token=on_token)
    verify: bool | str = settings.ca_bundle or True
    return Connection(endpoint, settings.project_id, auth, auth.identity, verify)


def make_client(conn: Connection, settings: Settings, clock: Clock) -> DrsClient:
    return DrsClient(conn.endpoint, conn.project_id, auth=conn.auth, verify=conn.verify, clock=clock,
                     pacer=process_pacer(clock, settings.rate), max_concurrency=settings.concurrency)


def settings_for_run(settings: Settings, run: Run) -> Settings:
    """Settings to continue `run` with: its project, endpoint (unless a region is set), ticket and reason fill in
    whatever the flags, environment and config file leave unset."""
    return settings.model_copy(update={
        "project_id": settings.project_id or run.project_id,
        "endpoint": settings.endpoint or (None if settings.region else run.endpoint),
        "ticket": settings.ticket or run.ticket, "reason": settings.reason or run.reason})


def tuning_from(settings: Settings) -> Tuning:
    if settings.force and settings.no_force:
        raise ConfigError("--force and --no-force contradict each other: give one")
    return Tuning(batch_size=settings.batch_size, poll_interval=settings.poll_interval,
                  max_poll_interval=max(settings.poll_interval, min(60.0, settings.poll_interval * 12)),
                  stop_timeout=settings.stop_timeout, delete_timeout=settings.delete_timeout,
                  timeout=settings.timeout, force=settings.force, no_force=settings.no_force,
                  breakpoint=settings.record_breakpoint, claim_size=settings.claim_size,
                  lease_seconds=settings.lease_seconds)


@dataclass
class RunSummary:
    """The contract's JSON document."""

    run_id: str
    exit_code: int
    counts: dict[str, int]
    jobs: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    left_behind: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "exit_code": self.exit_code, "counts": self.counts, "jobs": self.jobs,
                "left_behind": self.left_behind}


def summarize(store: Store, run_id: str) -> RunSummary:
    jobs = []
    counts: Counter[str] = Counter()
    for t in store.tasks(run_id):
        outcome = outcome_of(t.state)
        counts[outcome] += 1
        jobs.append({"job_id": t.job_id, "outcome": outcome, "local_state": t.state.value,
                     "remote_status": t.last_status, "reason": t.reason, "name": t.name})
    ordered = {k: counts[k] for k in OUTCOMES if counts[k]}
    left = left_behind(store, run_id)
    code = exit_code_for(ordered)
    if left and code == EXIT_OK:
        code = EXIT_INCOMPLETE
    return RunSummary(run_id, code, ordered, jobs, left_behind=left)


async def plan(client: DrsClient, selection: Selection, endpoint: str, clock: Clock) -> Plan:
    return await make_plan(client, selection, endpoint=endpoint, now=clock.now())


async def execute(store: Store, client: DrsClient, ctx: Context, tuning: Tuning, clock: Clock, run_id: str, *,
                  fresh: bool = False, wait_for_all: bool = True,
                  progress: Callable[[Snapshot], None] | None = None,
                  stop_event: asyncio.Event | None = None) -> RunSummary:
    """Work the run until done, interrupted or aborted (the engine records how it ended), then summarise."""
    engine = Engine(store, client, ctx, tuning, clock, run_id, fresh=fresh, progress=progress,
                    stop_event=stop_event or asyncio.Event())
    await engine.run(wait_for_all=wait_for_all)
    summary = summarize(store, run_id)
    summary.extra = {"api_calls": engine.calls, "stats": dict(engine.stats), "client": dict(client.stats)}
    return summary
