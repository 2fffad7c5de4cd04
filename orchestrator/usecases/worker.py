"""What a `worker` does: join unfinished runs on a shared PostgreSQL database until nothing is left.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.engine import Tuning
from orchestrator.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, StoreError
from orchestrator.store.repo import Event, Store
from orchestrator.store.schema import Run
from orchestrator.usecases.connection import connect, connect_targets, settings_for_run, tuning_for_run
from orchestrator.usecases.context import new_context, new_worker_id
from orchestrator.usecases.recording import needs_planning
from orchestrator.usecases.resume import find_run
from orchestrator.usecases.summary import RunSummary, summarize
from orchestrator.usecases.teardown import execute_run, recorded_targets


@dataclass
class WorkerResult:
    """What one worker did: its id, the worst exit code of the runs it joined, and their summaries."""

    worker: str
    exit_code: int
    summaries: dict[str, RunSummary] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"worker": self.worker, "exit_code": self.exit_code,
                "runs": [s.to_json() for s in self.summaries.values()]}


async def work_runs(store: Store, settings: Settings, env: Mapping[str, str], flags: Mapping[str, Any],
                    run_id: str | None, *, stop_event: asyncio.Event, wait_for_runs: float = 0.0,
                    say: Callable[[str], None] = lambda _m: None,
                    on_token: Callable[[str], None] | None = None) -> WorkerResult:
    """Work every unfinished run (or one run) as a worker; the exit code is the worst of the runs joined.

    wait_for_runs: with nothing to do, wait up to this many seconds for a run to appear (workers started
    alongside `run`, before it has recorded its run) instead of exiting at once."""
    if not store.is_postgres:
        raise ConfigError("worker needs a shared PostgreSQL database (--db postgresql+psycopg://...); "
                          "on SQLite one process works a run: use `drs-teardown resume`")
    only = find_run(store, run_id).id if run_id else None
    clock = RealClock()
    worker = new_worker_id()
    store.register_worker(worker, socket.gethostname(), os.getpid(), clock.now())
    say(f"worker {worker}: started")
    loop = WorkerLoop(store, settings, env, flags, worker, clock, only, wait_for_runs, say, on_token)
    try:
        code = await loop.run(stop_event)
    finally:
        with contextlib.suppress(Exception):
            store.worker_finished(worker, clock.now())
    return WorkerResult(worker, code, loop.summaries)


class WorkerLoop:
    """One worker process's loop over the runs it may join."""

    def __init__(self, store: Store, settings: Settings, env: Mapping[str, str], flags: Mapping[str, Any],
                 worker: str, clock: RealClock, only: str | None, wait_for_runs: float,
                 say: Callable[[str], None], on_token: Callable[[str], None] | None) -> None:
        self.store, self.settings, self.env, self.flags = store, settings, env, flags
        self.worker, self.clock, self.only, self.say, self.on_token = worker, clock, only, say, on_token
        self.wait_until = clock.monotonic() + wait_for_runs
        self.deadline = clock.monotonic() + settings.timeout
        self.summaries: dict[str, RunSummary] = {}
        self._skipped: set[str] = set()

    def _waiting(self, run_id: str | None) -> None:
        waiting = getattr(self.store, "worker_waiting", None)
        if waiting is not None:
            with contextlib.suppress(StoreError):
                waiting(self.worker, run_id, self.clock.now())

    async def run(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            runs = [(r, settings_for_run(self.settings, r)) for r in self._candidates()]
            left = [(r, s) for r, s in runs if self.store.active_count(r.id)]
            for r, s in runs:
                if (r, s) not in left:
                    if needs_planning(r):
                        self._unplanned(r)  # no task left because its plan never was (fully) recorded
                    else:
                        self._close(r, s)  # done, but whoever finished its last task died before saying so
            if not left:
                if (self.summaries or self.clock.monotonic() >= self.wait_until) and not self._being_planned():
                    break
                self._waiting(None)  # alive between runs: counts in the shares of the runs to come
                with contextlib.suppress(TimeoutError):  # nothing yet: a run may be about to be recorded
                    await asyncio.wait_for(stop.wait(), timeout=min(0.5, self.settings.poll_interval))
                continue
            now = self.clock.now()
            ready = [(r, s) for r, s in left if self.store.claimable_count(r.id, now)]
            if not ready:
                # Every task left is held by another live worker: wait for it to finish them, or for its lease
                # to run out (it died), and take over then.
                self._waiting(left[0][0].id)  # counts in that run's shares: its workers hand back to us
                tunings = [self._tuning(r, s) for r, s in left]
                wait = min(min(t.lease_check, t.poll_interval) for t in tunings)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                continue
            for run, run_settings in ready:
                await self._join(run, run_settings, stop)
                if stop.is_set():
                    break
        for run_id in list(self.summaries):
            self.summaries[run_id] = summarize(self.store, run_id)
        if stop.is_set():
            return EXIT_INTERRUPTED
        for summary in self.summaries.values():
            self.say(f"run {summary.run_id}: " + "  ".join(f"{k} {v}" for k, v in summary.counts.items()))
        self.say(f"worker {self.worker}: nothing left")
        return max((summary.exit_code for summary in self.summaries.values()), default=EXIT_OK)

    def _candidates(self) -> list[Run]:
        runs = self.store.unfinished_runs()
        if self.only is not None:
            runs = [r for r in runs if r.id == self.only]
        out = []
        for r in reversed(runs):  # oldest first: finish what was started first
            if r.status == "planning":
                continue  # its owner is still reading details: join once its tasks are recorded
            if self.settings.project_id and self.settings.project_id != r.project_id \
                    and not r.selection.get("targets"):
                if r.id not in self._skipped:
                    self._skipped.add(r.id)
                    self.say(f"worker: skipping run {r.id} (project {r.project_id}, not {self.settings.project_id})")
                continue
            out.append(r)
        return out

    def _being_planned(self) -> bool:
        """A run its live owner is still planning will have tasks to share: wait for it (within --timeout)
        rather than leave with "nothing left" while its plan is being read."""
        if self.clock.monotonic() >= self.deadline:
            return False
        runs = [r for r in self.store.unfinished_runs() if r.status == "planning"
                and (self.only is None or r.id == self.only)]
        return any(self.store.run_status(r).alive for r in runs)

    def _unplanned(self, run: Run) -> None:
        """Never closed by a worker: an interrupted run whose planning did not finish is not done, `resume`
        plans it (closing it would call a teardown with nothing deleted a success)."""
        if run.id not in self._skipped:
            self._skipped.add(run.id)
            self.say(f"worker: run {run.id} was not fully planned: `drs-teardown resume {run.id}` plans it")

    def _tuning(self, run: Run, run_settings: Settings) -> Tuning:
        # The run's recorded tuning (lease and claim size included); flags given to this worker override it.
        return tuning_for_run(run_settings, run.options, self.flags)

    def _conns(self, run: Run, run_settings: Settings) -> list[Any]:
        targets = recorded_targets(run.selection)
        if targets:
            return connect_targets(run_settings, self.env, targets, on_token=self.on_token)
        return [connect(run_settings, self.env, on_token=self.on_token)]

    def _close(self, run: Run, run_settings: Settings) -> None:
        summary = summarize(self.store, run.id)
        ctx = new_context(self._conns(run, run_settings)[0].identity, ticket=run_settings.ticket,
                          reason=run_settings.reason, worker=self.worker)
        event = Event(trigger="run_finished", outcome=str(summary.exit_code), detail=f"counts={summary.counts}")
        if self.store.finish_run(run.id, ctx, event, self.clock.now(), summary.exit_code):
            self.summaries[run.id] = summary

    async def _join(self, run: Run, run_settings: Settings, stop: asyncio.Event) -> None:
        tuning = self._tuning(run, run_settings)
        conns = self._conns(run, run_settings)
        ctx = new_context(conns[0].identity, ticket=run_settings.ticket, reason=run_settings.reason,
                          worker=self.worker)
        self.say(f"worker {self.worker}: joining run {run.id}")
        self.summaries[run.id] = await execute_run(self.store, conns, recorded_targets(run.selection),
                                                   run_settings, ctx, tuning, self.clock, run.id, fresh=False,
                                                   wait_for_all=False, stop_event=stop)
