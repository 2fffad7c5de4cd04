"""`drs-teardown demo`: the main job on the embedded simulator, checked against the policy it claims."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.engine import actor_info, new_worker_id, start_run
from orchestrator.errors import EXIT_ERROR, EXIT_OK
from orchestrator.planning import Action, Selection
from orchestrator.render import counts_line, plan_table, summary_table
from orchestrator.simulator import Simulator
from orchestrator.store.repo import Context, Store

if TYPE_CHECKING:
    from orchestrator.cli import App


def run_demo(app: App, settings: Settings, *, n_jobs: int, seed: int, profile: str, poll_interval: float) -> int:
    """Start the simulator on a free loopback port, tear everything down, verify; 0 when the policy held."""
    token = secrets.token_urlsafe(24)
    sim = Simulator(seed=seed, jobs=n_jobs, profile=profile, tokens={token})
    clock = RealClock()
    store = Store(settings.db)
    with sim.serve() as url:
        app.err.print(f"simulator listening on {url} (project {sim.project_id}, profile {profile}, "
                      f"{len(sim.jobs)} tasks incl. children)")
        demo_settings = settings.model_copy(update={
            "endpoint": url, "project_id": sim.project_id, "poll_interval": poll_interval,
            "ticket": settings.ticket or "DEMO-1", "reason": settings.reason or "drs-teardown demo"})
        conn = api.connect(demo_settings, {"DRS_TEARDOWN_AUTH_TOKEN": token})
        tuning = api.tuning_from(demo_settings)
        ctx = Context(actor=actor_info(conn.identity), worker=new_worker_id(), ticket=demo_settings.ticket,
                      reason=demo_settings.reason)

        async def go(stop: asyncio.Event) -> tuple[api.RunSummary, str, dict[str, str]]:
            from orchestrator.cli import _progress

            async with api.make_client(conn, demo_settings, clock) as client:
                calls: list[object] = []
                client.recorder = calls.append
                plan = await api.plan(client, Selection(all=True), url, clock)
                if app.output == "text":
                    app.err.print(plan_table(plan, limit=12))
                    app.err.print(counts_line(plan.counts()))
                planned = {i.job_id: i.action.value for i in plan.items}
                run_id = start_run(store, plan, ctx, tuning, clock.now(), consent="demo", plan_hash=plan.hash)
                store.record_exchanges(run_id, ctx.worker, calls)  # type: ignore[arg-type]
                app.err.print(f"run {run_id}: tearing down {len(plan.items)} task(s)")
                with _progress(app) as progress:
                    summary = await api.execute(store, client, ctx, tuning, clock, run_id, fresh=True,
                                                progress=progress, stop_event=stop)
                return summary, run_id, planned

        from orchestrator.cli import _run_async

        summary, run_id, planned = _run_async(app, go)
        problems = _check(store, sim, summary, planned)
    verification = store.verify(run_id)
    if not verification.ok:
        problems.append(f"audit chain broken: {verification.problem}")
    if app.output == "json":
        app.emit({**summary.to_json(), "demo_ok": not problems, "problems": problems,
                  "head_hash": verification.head_hash, "simulator_violations": dict(sim.violations)})
    else:
        app.err.print(summary_table(summary.jobs, limit=15))
        app.err.print(counts_line(summary.counts))
        app.err.print(f"audit: {verification.records} records, chain {'intact' if verification.ok else 'BROKEN'}, "
                      f"head {verification.head_hash}")
        app.err.print(f"simulator rule violations: {sum(sim.violations.values())}")
        if problems:
            for p in problems:
                app.err.print(f"[red]demo check failed:[/red] {p}")
        else:
            app.err.print(f"[green]demo ok[/green]: every task the policy allows is deleted, yearly/monthly tasks "
                          f"are blocked untouched. Explore: drs-teardown status {run_id[:8]} · "
                          f"audit {run_id[:8]} · verify · report {run_id[:8]} --html report.html")
    store.close()
    return EXIT_OK if not problems else EXIT_ERROR


def _check(store: Store, sim: Simulator, summary: api.RunSummary, planned: dict[str, str]) -> list[str]:
    """The demo's claims: allowed tasks deleted, blocked ones untouched, no rule broken."""
    problems = []
    outcomes = {j["job_id"]: j["outcome"] for j in summary.jobs}
    for job_id, action in planned.items():
        want = {Action.STOP_THEN_DELETE.value: "deleted", Action.DELETE.value: "deleted",
                Action.WAIT.value: "deleted", Action.SKIP.value: "skipped", Action.BLOCK.value: "blocked"}[action]
        if outcomes.get(job_id) != want:
            problems.append(f"{job_id}: planned {action}, ended {outcomes.get(job_id)}")
    touched = {c["job_id"] for c in sim.destructive_calls}
    for job_id, action in planned.items():
        if action == Action.BLOCK.value and job_id in touched:
            problems.append(f"{job_id}: blocked, yet a destructive call reached it")
    if sim.violations:
        problems.append(f"simulator rule violations: {dict(sim.violations)}")
    return problems
