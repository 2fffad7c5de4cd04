"""`drs-teardown worker`: join unfinished runs on a shared PostgreSQL database until nothing is left."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.engine import actor_info, new_worker_id
from orchestrator.store.repo import Context, Store

if TYPE_CHECKING:
    from orchestrator.cli import App


def work_runs(app: App, store: Store, settings: Settings, flags: dict[str, Any], run_id: str | None) -> int:
    """Work every unfinished run of this project (or one run) as an extra worker; exit 0 when none is left."""
    from orchestrator.cli import Exit, _run_async, _tuning_for_run

    worker = new_worker_id()
    clock = RealClock()
    store.register_worker(worker, socket.gethostname(), os.getpid(), clock.now())
    worst = api.EXIT_OK
    done: set[str] = set()
    while True:
        runs = [r for r in store.unfinished_runs() if r.id not in done]
        if run_id:
            runs = [r for r in runs if r.id.startswith(run_id)]
            if not runs and not done:
                target = store.find_run(run_id)
                if target is None:
                    raise Exit(api.EXIT_ERROR, f"no run {run_id!r}")
        if not runs:
            app.err.print(f"worker {worker}: nothing left")
            return worst
        run = runs[0]
        done.add(run.id)
        run_settings = settings.model_copy(update={
            "project_id": settings.project_id or run.project_id,
            "endpoint": settings.endpoint or (None if settings.region else run.endpoint)})
        if run_settings.project_id != run.project_id:
            app.err.print(f"worker: skipping run {run.id} (project {run.project_id}, not {run_settings.project_id})")
            continue
        tuning = _tuning_for_run(run_settings, run.options, flags)
        conn = api.connect(run_settings, app.env)
        ctx = Context(actor=actor_info(conn.identity), worker=worker, ticket=run.ticket, reason=run.reason)
        app.err.print(f"worker {worker}: joining run {run.id}")

        async def go(stop: asyncio.Event, run_id_: str = run.id) -> api.RunSummary:
            async with api.make_client(conn, run_settings, clock) as client:
                return await api.execute(store, client, ctx, tuning, clock, run_id_, fresh=False,
                                         wait_for_all=False, stop_event=stop)

        summary = _run_async(app, go)
        if summary.exit_code == api.EXIT_INTERRUPTED and store.run(run.id) and store.active_count(run.id):
            # Other workers still hold tasks of this run: our part is done.
            summary.exit_code = api.EXIT_OK
        worst = max(worst, summary.exit_code) if summary.exit_code != api.EXIT_INTERRUPTED else worst
        if app.output == "json":
            app.emit({**summary.to_json(), "worker": worker})
