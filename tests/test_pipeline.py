"""The plan pipelined into the run (issue 16): `run --yes` without --plan records the run first, and stops go
out while later detail batches are still being read; the plan it records is the plan `plan` shows; the rails
still hold before anything is sent."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.engine import Tuning
from orchestrator.planning import Action, Plan, PlanItem, make_plan
from orchestrator.selection import Selection
from orchestrator.simulator import JobSpec
from orchestrator.store.repo import Store
from orchestrator.usecases import new_context
from orchestrator.usecases.recording import add_plan, begin_run
from tests.kit import PROJECT, TOKEN, add, cli, simulator, sqlite_url

FAST = ["--poll-interval", "0.05"]


def _env(url: str, db: str) -> dict[str, str]:
    return {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
            "DRS_TEARDOWN_DB": db}


def _mixed_world(sim) -> list[str]:  # type: ignore[no-untyped-def]
    """Plain running tasks (more than one streamed batch), re-edit parents with children, a dual-active parent,
    yearly/monthly and deletable ones, and migration tasks (no status that moves on its own: two plans of it
    must be equal)."""
    ids = add(sim, 230, status="INCRE_TRANSFER_STARTED")
    ids += sim.add_jobs(3, JobSpec(status="INCRE_TRANSFER_STARTED", children=2))
    ids += sim.add_jobs(1, JobSpec(status="INCRE_TRANSFER_STARTED", multi_write=True, children=1,
                                   db_use_type="cloudDataGuard"))
    ids += sim.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED", period_order_id="CS-order-1"))
    ids += sim.add_jobs(3, JobSpec(status="RELEASE_RESOURCE_COMPLETE"))
    ids += sim.add_jobs(2, JobSpec(status="FULL_TRANSFER_STARTED", db_use_type="migration"))
    return ids


@pytest.mark.parametrize("by_id", [True, False], ids=["by-id", "by-filter"])
def test_streamed_items_are_the_plans_own_and_none_has_a_parent_or_a_child(by_id: bool) -> None:
    with simulator(profile="fast") as (sim, url):
        ids = _mixed_world(sim)
        selection = Selection(job_ids=tuple(ids)) if by_id else Selection(all=True)  # ids: top-level tasks

        async def plans() -> tuple[list[PlanItem], object, object]:
            conn = api.connect(Settings(endpoint=url, project_id=PROJECT), {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN})
            streamed: list[PlanItem] = []

            async def on_items(items: list[PlanItem]) -> None:
                streamed.extend(items)

            s = Settings(endpoint=url, project_id=PROJECT)
            async with api.make_client(conn, s, RealClock()) as client:
                piped = await make_plan(client, selection, endpoint=url, now=client.clock.now(), on_items=on_items)
                whole = await make_plan(client, selection, endpoint=url, now=client.clock.now())
            return streamed, piped, whole

        streamed, piped, whole = asyncio.run(plans())
    assert piped.hash == whole.hash  # type: ignore[attr-defined]
    final = {i.job_id: i for i in piped.items}  # type: ignore[attr-defined]
    assert len(streamed) > 100 and len({i.job_id for i in streamed}) == len(streamed)
    assert all(final[i.job_id] == i for i in streamed)  # decided exactly as the plan's final pass decides
    assert all(not i.parent_job_id and not i.children for i in streamed)
    held = [i for i in final.values() if i.parent_job_id or i.children]
    assert held and not {i.job_id for i in held} & {i.job_id for i in streamed}
    assert any(i.action is Action.STOP_THEN_DELETE for i in streamed)


def test_a_pipelined_run_stops_while_the_plan_still_reads_and_records_the_plan_that_plan_shows(
        tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 400, status="INCRE_TRANSFER_STARTED")
        jobs_file = tmp_path / "jobs.txt"
        jobs_file.write_text("\n".join(jobs) + "\n")
        shown = cli(["plan", "--jobs-file", str(jobs_file), "--output", "json"], _env(url, db))
        assert shown.exit_code == 0, shown.output
        # Paced at 10 calls/s per API (a burst of 10): the 40 detail calls take about three seconds; the first
        # batch (100 ids) is in after the burst, and the children listing (two list calls) soon after.
        r = cli(["run", "--jobs-file", str(jobs_file), "--yes", "--output", "json", "--rate", "10", *FAST],
                _env(url, db))
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["counts"] == {"deleted": 400}
        assert dict(sim.violations) == {}
        routes = [e.get("route") for e in sim.requests]
    assert "planning and executing" in r.stderr
    # The service saw a stop (batch-jobs) before the last batch-detail of the plan.
    first_stop = routes.index("batch-jobs")
    last_detail = len(routes) - 1 - routes[::-1].index("batch-detail")
    assert first_stop < last_detail, "no stop went out before the plan had read every detail"
    store = Store(db)
    run = store.run(doc["run_id"])
    assert run is not None and run.plan_hash == json.loads(shown.stdout)["hash"]
    records = store.records(doc["run_id"])
    triggers = [rec.trigger for rec in records]
    assert triggers.count("plan") == 400 and "run_started" in triggers
    first_intent = triggers.index("stop")
    assert first_intent < len(triggers) - 1 - triggers[::-1].index("plan")  # acted on before the plan was whole
    v = cli(["verify", doc["run_id"], "--output", "json"], {"DRS_TEARDOWN_DB": db})
    assert v.exit_code == 0, v.output


def test_max_targets_refuses_a_pipelined_run_before_any_detail_is_read(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        add(sim, 12, status="INCRE_TRANSFER_STARTED")
        r = cli(["run", "--all", "--yes", "--max-targets", "5", "--output", "json", *FAST], _env(url, db))
        routes = {e.get("route") for e in sim.requests}
        assert sim.destructive_calls == []
    assert r.exit_code == 2 and "--max-targets 5" in json.loads(r.stdout)["error"], r.output
    assert "batch-detail" not in routes
    st = json.loads(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": db}).stdout)
    assert st["runs"][0]["status"] == "finished" and st["runs"][0]["exit_code"] == 2


def test_a_pipelined_run_overlapping_an_unfinished_one_is_refused_before_acting(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        job = add(sim, 1, status="INCRE_TRANSFER_STARTED")[0]
        store = Store(db)
        ctx = new_context(None, ticket=None, reason=None)
        now = datetime.now(UTC)
        other = begin_run(store, ctx, Tuning(), now, project_id=PROJECT, endpoint=url,
                          selection={"job_ids": [job]}, consent="test")
        add_plan(store, other, Plan(project_id=PROJECT, endpoint=url, selection=Selection(job_ids=(job,)),
                                    items=(PlanItem(job_id=job, action=Action.STOP_THEN_DELETE, reason="r",
                                                    status="INCRE_TRANSFER_STARTED"),), created_at=now),
                 ctx, now, consent="test")
        r = cli(["run", job, "--yes", "--output", "json", *FAST], _env(url, db))
        assert sim.destructive_calls == []
    assert r.exit_code == 2 and other in json.loads(r.stdout)["error"], r.output
