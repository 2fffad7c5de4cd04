"""The use-case layer as a Python runbook calls it: the same rails as the CLI, and a run recorded before
planning that a stop (or kill) while planning leaves resumable."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import Interrupted, Refused
from orchestrator.selection import Selection
from orchestrator.simulator import JobSpec
from orchestrator.store.repo import Store
from orchestrator.usecases import Teardown, pick_run, prepare_resume, records_before_planning
from tests.kit import TOKEN, settings, simulator

ENV = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}


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
        store = Store(sqlite_db)
        assert records_before_planning(store)  # the store records a run before planning (status "planning")
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


def test_a_run_finished_between_the_pick_and_the_claim_is_not_worked_again(sqlite_db: str) -> None:
    # Two resumes: the second picks the run while the first works it, and gets the claim only once the first
    # has finished it. It must send nothing and leave the finished trail as it is.
    with simulator() as (sim, url):
        sim.add_jobs(2, JobSpec(status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration"))
        store = Store(sqlite_db)
        s = settings(url, sqlite_db)
        td = Teardown(s, ENV, selection=Selection(all=True), consent="runbook", store=store)
        stop = asyncio.Event()
        stop.set()
        with pytest.raises(Interrupted):
            asyncio.run(td.plan(stop))
        picked = pick_run(store, None)  # the second resume's pick: unfinished
        assert picked is not None and picked.status != "finished"
        first = prepare_resume(store, picked, s.model_copy(update={"project_id": None}), ENV, {})
        assert asyncio.run(first.execute()).exit_code == 0
        calls, records = len(sim.destructive_calls), len(store.records(picked.id))
        late = prepare_resume(store, picked, s.model_copy(update={"project_id": None}), ENV, {})
        summary = asyncio.run(late.execute())
        assert summary.exit_code == 0 and summary.counts == {"deleted": 2}
        assert len(sim.destructive_calls) == calls and len(store.records(picked.id)) == records
        assert store.run(picked.id).status == "finished" and store.verify(picked.id).ok  # type: ignore[union-attr]
