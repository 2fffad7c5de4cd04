"""The use-case layer as a Python runbook calls it: the same rails as the CLI, and a run recorded before
planning that a stop (or kill) while planning leaves resumable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from orchestrator.errors import Interrupted, Refused
from orchestrator.selection import Selection
from orchestrator.simulator import JobSpec
from orchestrator.store.models import Run, Task
from orchestrator.store.repo import Context, Event, Store
from orchestrator.usecases import Teardown, pick_run, prepare_resume, records_before_planning
from tests.kit import TOKEN, settings, simulator

ENV = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}


class PlanningStore(Store):
    """A store with the interface the store area adds (`add_tasks`, "planning" runs unfinished)."""

    def add_tasks(self, run_id: str, tasks: Sequence[dict[str, Any]], ctx: Context, events: Sequence[Event],
                  now: datetime) -> None:
        with self.session() as s:
            if tasks:
                s.execute(insert(Task.__table__), list(tasks))
            self._append(s, run_id, ctx, events, now)

    def unfinished_runs(self) -> list[Run]:
        with self.session() as s:
            return list(s.execute(select(Run).where(Run.status.in_(("planning", "running", "interrupted")))
                                  .order_by(Run.created_at.desc())).scalars())


def test_a_runbook_gets_the_max_targets_rail(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        sim.add_jobs(3, JobSpec())
        td = Teardown(settings(url, sqlite_db, max_targets=2), ENV, selection=Selection(all=True), consent="runbook",
                      store=Store(sqlite_db))
        with pytest.raises(Refused, match="--max-targets 2"):
            asyncio.run(td.plan())
        assert sim.destructive_calls == []


def test_stopped_while_planning_then_resume_plans_and_deletes_everything(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        ids = sim.add_jobs(4, JobSpec(status="INCRE_TRANSFER_STARTED"))
        store = PlanningStore(sqlite_db)
        assert records_before_planning(store) and not records_before_planning(Store(sqlite_db))
        s = settings(url, sqlite_db)
        td = Teardown(s, ENV, selection=Selection(all=True), consent="runbook", store=store)
        stop = asyncio.Event()
        stop.set()  # a signal arrives while the details are read
        with pytest.raises(Interrupted, match="resumable"):
            asyncio.run(td.plan(stop))
        assert sim.destructive_calls == []
        run = pick_run(store, None)
        assert run is not None and run.id == td.run_id and store.tasks(run.id) == []
        resumption = prepare_resume(store, run, s.model_copy(update={"project_id": None}), ENV, {})
        summary = asyncio.run(resumption.execute())
        assert summary.exit_code == 0 and summary.counts == {"deleted": 4}
        assert all(sim.status_of(i) in ("DELETED", None) for i in ids)
        assert [r.trigger for r in store.records(run.id)][:2] == ["run_recorded", "run_interrupted"]
        assert "run_resumed" in {r.trigger for r in store.records(run.id)}
        assert store.verify(run.id).ok
