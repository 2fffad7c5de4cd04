"""`drs-teardown demo`: the main job on the embedded simulator, checked against the policy it claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from orchestrator.cli.actions import _progress
from orchestrator.cli.options import output_option
from orchestrator.cli.shell import App, run_async
from orchestrator.config import load_settings
from orchestrator.errors import EXIT_ERROR, EXIT_OK

if TYPE_CHECKING:
    from orchestrator.simulator import Simulator
    from orchestrator.usecases import RunSummary

GONE = (None, "DELETED")


@click.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(1, 5000), default=40, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--profile", default="calm", show_default=True, help="simulator profile (name or .toml file)")
@click.option("--poll-interval", type=click.FloatRange(0.01), default=1.0, show_default=True)
@output_option
@click.pass_obj
def demo(app: App, n_jobs: int, seed: int, profile: str, poll_interval: float, output: str) -> int:
    """The main job on the embedded simulator: seed a realistic mix, tear it all down, check the result.

    Exit 0 when the policy held: every task it allows is gone from the simulator's world, yearly/monthly tasks
    are blocked untouched, the trail verifies. No arguments or network needed; writes ./drs-teardown.db.

    \b
    Examples:
      drs-teardown demo
      drs-teardown demo --jobs 200 --profile rough --output json
    """
    # Imported on use: the simulator (and the rest) is not needed by `--help` or any other command.
    import secrets

    from orchestrator.cli.render import plan_table, summary_table
    from orchestrator.selection import Selection
    from orchestrator.simulator import Simulator, load_profile
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Teardown

    try:
        loaded = load_profile(profile)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from exc
    settings = load_settings(app.config, {}, {"db": app.db or app.env.get("DRS_TEARDOWN_DB"), **app.globals})
    token = secrets.token_urlsafe(24)
    app.redactor.add(token)
    sim = Simulator(seed=seed, jobs=n_jobs, profile=loaded, tokens={token})
    store = Store(settings.db)
    with sim.serve() as url:
        app.say(f"simulator listening on {url} (project {sim.project_id}, profile {profile}, "
                f"{len(sim.jobs)} tasks incl. children)")
        demo_settings = settings.model_copy(update={
            "endpoint": url, "project_id": sim.project_id, "poll_interval": poll_interval,
            "ticket": settings.ticket or "DEMO-1", "reason": settings.reason or "drs-teardown demo"})
        td = Teardown(demo_settings, {"DRS_TEARDOWN_AUTH_TOKEN": token}, selection=Selection(all=True),
                      consent="demo", store=store)
        run_plan = run_async(app, td.plan)
        if output == "text":
            app.out.print(plan_table(run_plan.as_plan(), limit=12))
        planned = {i.job_id: i.action.value for i in run_plan.items}
        run_id = td.record()
        app.say(f"run {run_id}: tearing down {len(run_plan.items)} task(s)")

        async def go(stop):  # type: ignore[no-untyped-def]
            with _progress(app, demo_settings.progress_interval) as progress:
                return await td.execute(progress=progress, stop_event=stop)

        summary: RunSummary = run_async(app, go)
        problems = world_problems(sim, summary, planned)
    verification = store.verify(run_id)
    if not verification.ok:
        problems.append(f"audit chain broken: {verification.problem}")
    code = EXIT_OK if not problems else EXIT_ERROR
    if output == "json":
        app.emit({**summary.to_json(), "exit_code": code, "run_exit_code": summary.exit_code,
                  "demo_ok": not problems, "problems": problems, "head_hash": verification.head_hash,
                  "simulator_violations": dict(sim.violations)})
    else:
        app.out.print(summary_table(summary.jobs, limit=15))
        app.out.print(f"audit: {verification.records} records, chain {'intact' if verification.ok else 'BROKEN'}, "
                      f"head {verification.head_hash}", markup=False)
        app.out.print(f"simulator rule violations: {sum(sim.violations.values())}", markup=False)
        for p in problems:
            app.out.print(f"demo check failed: {p}", markup=False, style="red")
        if not problems:
            app.out.print(f"[green]demo ok[/green]: every task the policy allows is deleted, yearly/monthly tasks "
                          f"are blocked untouched. Explore: drs-teardown status {run_id[:8]} · "
                          f"audit {run_id[:8]} · verify · report {run_id[:8]} --html report.html")
    store.close()
    return code


def world_problems(sim: Simulator, summary: RunSummary, planned: dict[str, str]) -> list[str]:
    """The demo's claims, checked against the simulator's whole world (not only the plan): allowed tasks gone,
    blocked ones (and what hangs off them) untouched, no rule broken."""
    from orchestrator.planning import Action

    problems = []
    outcomes = {j["job_id"]: j["outcome"] for j in summary.jobs}
    want = {Action.STOP_THEN_DELETE.value: "deleted", Action.DELETE.value: "deleted", Action.WAIT.value: "deleted",
            Action.SKIP.value: "skipped", Action.BLOCK.value: "blocked"}
    for job_id, action in planned.items():
        if outcomes.get(job_id) != want[action]:
            problems.append(f"{job_id}: planned {action}, ended {outcomes.get(job_id)}")
    blocked = {j for j, a in planned.items() if a == Action.BLOCK.value}
    touched = {c["job_id"] for c in sim.destructive_calls}
    problems += [f"{j}: blocked, yet a destructive call reached it" for j in sorted(blocked & touched)]
    world = sim.jobs
    kept = set(blocked)
    for job_id, job in world.items():  # what hangs off a blocked task stays with it
        parent = job.get("parent_id") or job.get("parentId")
        if parent in blocked:
            kept.add(job_id)
        if job_id in blocked:
            kept.update(job.get("child_ids") or ())
    for job_id in sorted(world):
        status = sim.status_of(job_id)
        if status not in GONE and job_id not in kept:
            problems.append(f"{job_id}: still in the world ({status}) though the policy allows deleting it")
    if sim.violations:
        problems.append(f"simulator rule violations: {dict(sim.violations)}")
    return problems
