"""`drs-teardown worker`: join unfinished runs on a shared PostgreSQL database until nothing is left.

A worker claims tasks in batches (SELECT … FOR UPDATE SKIP LOCKED) under a lease it renews while it works, and
works them through the same engine as `run`. When every task left is held by another live worker it waits:
for those workers to finish, or for a lease to run out (a dead worker), whose tasks it then takes over and
reconciles from their intent states exactly as `resume` does. It exits when no unfinished run has a task left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.engine import Tuning, actor_info, new_worker_id
from orchestrator.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from orchestrator.render import counts_line
from orchestrator.store.models import Run
from orchestrator.store.repo import Context, Event, Store

if TYPE_CHECKING:
    from orchestrator.cli import App


def work_runs(app: App, store: Store, settings: Settings, flags: dict[str, Any], run_id: str | None, *,
              wait_for_runs: float = 0.0) -> int:
    """Work every unfinished run (or one run) as a worker; the exit code is the worst of the runs joined.

    wait_for_runs: with nothing to do, wait up to this many seconds for a run to appear (workers started
    alongside `run`, before it has recorded its run) instead of exiting at once.
    """
    from orchestrator.cli import Exit, _run_async

    only: str | None = None
    if run_id:
        target = store.find_run(run_id)
        if target is None:
            raise Exit(EXIT_ERROR, f"no run {run_id!r} in {store.url} (see `drs-teardown status`)")
        only = target.id
    clock = RealClock()
    worker = new_worker_id()
    store.register_worker(worker, socket.gethostname(), os.getpid(), clock.now())
    app.err.print(f"worker {worker}: started")
    pool = _Worker(app, store, settings, flags, worker, clock, only, wait_for_runs)
    try:
        code: int = _run_async(app, pool.run)
    finally:
        with contextlib.suppress(Exception):
            store.worker_finished(worker, clock.now())
    if app.output == "json":
        runs = [s.to_json() for s in pool.summaries.values()]
        app.emit({"worker": worker, "exit_code": code, "runs": runs})
    return code


class _Worker:
    """One worker process's loop over the runs it may join."""

    def __init__(self, app: App, store: Store, settings: Settings, flags: dict[str, Any], worker: str,
                 clock: RealClock, only: str | None, wait_for_runs: float = 0.0) -> None:
        self.app, self.store, self.settings, self.flags = app, store, settings, flags
        self.worker, self.clock, self.only = worker, clock, only
        self.wait_until = clock.monotonic() + wait_for_runs
        self.summaries: dict[str, api.RunSummary] = {}
        self._skipped: set[str] = set()

    async def run(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            runs = [(r, self._settings_for(r)) for r in self._candidates()]
            left = [(r, s) for r, s in runs if self.store.active_count(r.id)]
            for r, s in runs:
                if (r, s) not in left:
                    self._close(r, s)  # done, but whoever finished its last task died before saying so
            if not left:
                if self.summaries or self.clock.monotonic() >= self.wait_until:
                    break
                with contextlib.suppress(TimeoutError):  # nothing yet: a run may be about to be recorded
                    await asyncio.wait_for(stop.wait(), timeout=min(0.5, self.settings.poll_interval))
                continue
            now = self.clock.now()
            ready = [(r, s) for r, s in left if self.store.claimable_count(r.id, now)]
            if not ready:
                # Every task left is held by another live worker: wait for it to finish them, or for its lease
                # to run out (it died), and take over then.
                tunings = [self._tuning(r, s) for r, s in left]
                wait = min(min(t.lease_seconds / 3, t.poll_interval) for t in tunings)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                continue
            for run, run_settings in ready:
                await self._join(run, run_settings, stop)
                if stop.is_set():
                    break
        for run_id in list(self.summaries):
            self.summaries[run_id] = api.summarize(self.store, run_id)
        if stop.is_set():
            return EXIT_INTERRUPTED
        for summary in self.summaries.values():
            self.app.err.print(f"run {summary.run_id}: {counts_line(summary.counts)}")
        self.app.err.print(f"worker {self.worker}: nothing left")
        return max((summary.exit_code for summary in self.summaries.values()), default=EXIT_OK)

    def _candidates(self) -> list[Run]:
        runs = self.store.unfinished_runs()
        if self.only is not None:
            runs = [r for r in runs if r.id == self.only]
        out = []
        for r in reversed(runs):  # oldest first: finish what was started first
            if self.settings.project_id and self.settings.project_id != r.project_id:
                if r.id not in self._skipped:
                    self._skipped.add(r.id)
                    self.app.err.print(f"worker: skipping run {r.id} (project {r.project_id}, "
                                       f"not {self.settings.project_id})")
                continue
            out.append(r)
        return out

    def _settings_for(self, run: Run) -> Settings:
        return api.settings_for_run(self.settings, run)

    def _tuning(self, run: Run, run_settings: Settings) -> Tuning:
        from orchestrator.cli import _tuning_for_run

        # The run's recorded tuning (lease and claim size included); flags given to this worker override it.
        return _tuning_for_run(run_settings, run.options, self.flags)

    def _close(self, run: Run, run_settings: Settings) -> None:
        summary = api.summarize(self.store, run.id)
        ctx = Context(actor=actor_info(api.connect(run_settings, self.app.env).identity), worker=self.worker,
                      ticket=run_settings.ticket, reason=run_settings.reason)
        event = Event(trigger="run_finished", outcome=str(summary.exit_code),
                      detail=f"counts={summary.counts}")
        if self.store.finish_run(run.id, ctx, event, self.clock.now(), summary.exit_code):
            self.summaries[run.id] = summary

    async def _join(self, run: Run, run_settings: Settings, stop: asyncio.Event) -> None:
        tuning = self._tuning(run, run_settings)
        conn = api.connect(run_settings, self.app.env)
        ctx = Context(actor=actor_info(conn.identity), worker=self.worker, ticket=run_settings.ticket,
                      reason=run_settings.reason)
        self.app.err.print(f"worker {self.worker}: joining run {run.id}")
        async with api.make_client(conn, run_settings, self.clock) as client:
            self.summaries[run.id] = await api.execute(self.store, client, ctx, tuning, self.clock, run.id,
                                                       fresh=False, wait_for_all=False, stop_event=stop)
