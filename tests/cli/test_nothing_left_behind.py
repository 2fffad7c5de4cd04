"""Nothing left behind (issue 11), over loopback as a user would: re-edit children go with their parent whether it
is selected by a filter or by its id, in both shapes of the list (children only in `children[]`, or also as
top-level rows); dual-active children are named in their parent's plan item; `demo` fails when its world keeps a
task it should have removed."""

from __future__ import annotations

import json

import pytest

from orchestrator.simulator import JobSpec
from tests.kit import PROJECT, TOKEN, cli, simulator

FAST = ["--poll-interval", "0.05"]
NAME = "crm-dev-sync-014"


def _env(url: str, db: str) -> dict[str, str]:
    return {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
            "DRS_TEARDOWN_DB": db}


@pytest.mark.parametrize("top_level", [False, True], ids=["children-only", "children-also-rows"])
@pytest.mark.parametrize("by", ["filter", "glob", "parent-id", "all"])
def test_reedit_children_are_selected_with_their_parent_and_removed_first(by: str, top_level: bool,
                                                                          sqlite_db: str) -> None:
    with simulator() as (sim, url):
        sim.configure(children_top_level=top_level)
        parent = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync", name=NAME, children=2,
                                     child_status="CHILD_TRANSFER_COMPLETE"))
        children = list(sim.jobs[parent]["child_ids"])
        other = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", name="orders-live-001"))
        args = {"filter": ["--name", NAME], "glob": ["--name", f"{NAME}*"], "parent-id": [parent.upper()],
                "all": ["--all"]}[by]
        env = _env(url, sqlite_db)
        shown = cli(["plan", *args, "--output", "json"], env)
        assert shown.exit_code == 0, shown.output
        items = {i["job_id"]: i for i in json.loads(shown.stdout)["items"]}
        family = {parent, *children}
        assert family <= set(items) and len(items) == len(family) + (by == "all")
        assert all(items[c]["parent_job_id"] == parent for c in children)
        r = cli(["run", *args, "--yes", "--output", "json", *FAST], env)
        doc = json.loads(r.stdout)
        assert r.exit_code == doc["exit_code"] == 0, r.output
        assert {j["job_id"]: j["outcome"] for j in doc["jobs"] if j["job_id"] in family} == \
            dict.fromkeys(family, "deleted")
        assert doc["left_behind"] == []
        assert all(sim.status_of(j) in ("DELETED", None) for j in family)  # the simulator's world, not the plan
        assert (sim.status_of(other) in ("DELETED", None)) is (by == "all")
        calls = sim.destructive_calls
        first_parent_call = min(i for i, c in enumerate(calls) if c["job_id"] == parent)
        child_deletes = [i for i, c in enumerate(calls) if c["job_id"] in children and c["delete_type"] == "delete"
                         and c["result"] == "success"]
        assert len(child_deletes) == 2 and max(child_deletes) < first_parent_call  # children first
        assert dict(sim.violations) == {}


def test_dual_active_children_are_named_in_their_parents_plan_item(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        parent = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="cloudDataGuard",
                                     engine_type="cloudDataGuard-mysql", multi_write=True, children=2))
        children = sim.jobs[parent]["child_ids"]
        shown = cli(["plan", parent, "--output", "json"], _env(url, sqlite_db))
    items = {i["job_id"]: i for i in json.loads(shown.stdout)["items"]}
    assert sorted(items[parent]["children"]) == sorted(children)
    assert all(items[c]["action"] == "skip" and items[c]["parent_job_id"] == parent for c in children)


def test_demo_fails_when_its_world_keeps_a_task_it_should_have_removed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The old planner took only the list's top-level rows: a re-edit child was never planned, and `demo` (which
    checked only the plan) said ok. Planning that drops the children again must make `demo` fail."""
    from orchestrator import planning

    real = planning.make_plan

    async def without_reedit_children(*a, **kw):  # type: ignore[no-untyped-def]
        plan = await real(*a, **kw)
        reedit = ("CHILD_", "RELEASE_CHILD")
        kept = tuple(i for i in plan.items if not (i.parent_job_id and (i.status or "").startswith(reedit)))
        assert len(kept) < len(plan.items), "the demo world has a re-edit child"
        return type(plan)(project_id=plan.project_id, endpoint=plan.endpoint, selection=plan.selection, items=kept,
                          created_at=plan.created_at, listed=plan.listed)

    monkeypatch.setattr("orchestrator.usecases.teardown.make_plan", without_reedit_children)
    r = cli(["demo", "--profile", "fast", "--poll-interval", "0.05", "--output", "json"], {}, cwd=tmp_path)
    d = json.loads(r.stdout)
    assert r.exit_code == d["exit_code"] == 1 and d["demo_ok"] is False
    assert any("still in the world" in p for p in d["problems"]), d["problems"]


def test_a_worker_never_closes_a_run_interrupted_while_planning(pg_url: str) -> None:
    """A signal on the first list call leaves an interrupted run with no task (its plan was never recorded): a
    worker finds no task left, but must not record it finished (exit 0, nothing deleted); `resume` plans it."""
    from tests.cli.test_contract import cli_process

    with simulator() as (sim, url):
        jobs = [sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED")) for _ in range(2)]
        env = _env(url, pg_url)
        signal_on_list = {**env, "DRS_TEARDOWN_CRASH_AT": "after_send:list:1:TERM"}
        stopped = cli_process(["run", "--all", "--yes", *FAST], signal_on_list)
        assert stopped.returncode == 130, stopped.stderr
        from orchestrator.store.repo import Store

        store = Store(pg_url)
        (run,) = store.runs()
        # The trail opens before the interruption is recorded (a signal while listing: the run stays).
        assert [r.trigger for r in store.records(run.id)] == ["run_recorded", "run_interrupted"]
        w = cli(["worker", "--output", "json", *FAST], env)
        assert w.exit_code == 0 and json.loads(w.stdout)["runs"] == [] and "not fully planned" in w.stderr
        st = json.loads(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": pg_url}).stdout)["runs"]
        assert [r["status"] for r in st] == ["interrupted"]
        resumed = cli(["resume", "--output", "json", *FAST], env)
        assert resumed.exit_code == 0 and json.loads(resumed.stdout)["counts"] == {"deleted": 2}, resumed.output
        assert all(sim.status_of(j) in ("DELETED", None) for j in jobs)


def test_a_call_refused_for_one_id_is_split_that_id_fails_with_the_code_and_the_rest_are_deleted(
        sqlite_db: str) -> None:
    """A runbook's ids are not checked locally (the CLI's are): a non-hex id makes the service refuse the whole
    batch-detail call (400 DRS.M00202, naming no id). The call is split until that id is alone; it ends failed
    with the code (read once, not re-read as a bad answer), the valid ids of the same call are deleted."""
    import asyncio

    from orchestrator.selection import Selection
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Teardown
    from tests.kit import settings

    with simulator() as (sim, url):
        jobs = [sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED")) for _ in range(5)]
        bad = "656gbd72-0000-4000-8000-000000000000"
        store = Store(sqlite_db)
        td = Teardown(settings(url, sqlite_db), {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN},
                      selection=Selection(job_ids=(*jobs, bad)), consent="runbook", store=store)

        async def go():  # type: ignore[no-untyped-def]
            plan = await td.plan()
            td.record()
            return plan, await td.execute()

        plan, summary = asyncio.run(go())
        refused = [r for r in sim.requests if r.get("route") == "batch-detail" and r.get("status") == 400]
    (item,) = [i for i in plan.items if i.job_id == bad]
    assert item.error_code == "DRS.M00202" and "DRS.M00202" in item.reason
    outcomes = {j["job_id"]: j for j in summary.jobs}
    assert outcomes[bad]["outcome"] == "failed" and "DRS.M00202" in outcomes[bad]["reason"]
    assert all(outcomes[j]["outcome"] == "deleted" for j in jobs) and summary.exit_code == 3
    (task,) = [t for t in store.tasks(td.run_id) if t.job_id == bad]
    assert task.error_code == "DRS.M00202"
    assert len(refused) <= 4  # 6 ids narrowed by halving to the one (no re-reads of a definite refusal)
    assert bad not in {c["job_id"] for c in sim.destructive_calls}


def test_the_trail_opens_with_the_consent_the_run_row_keeps_billing_mark_included(sqlite_db: str) -> None:
    import asyncio

    from orchestrator.selection import Selection
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Teardown
    from tests.kit import settings

    with simulator() as (sim, url):
        sim.add_job(JobSpec(status="CREATE_FAILED"))
        store = Store(sqlite_db)
        td = Teardown(settings(url, sqlite_db, unsubscribe_prepaid=True, bss_endpoint=url),
                      {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}, selection=Selection(all=True), consent="runbook",
                      store=store)
        asyncio.run(td.plan())
        td.release()
    run = store.run(td.run_id or "")
    assert run is not None and run.consent == "runbook+unsubscribe-prepaid"
    (opened,) = [r for r in store.records(run.id) if r.trigger == "run_recorded"]
    assert opened.detail == "consent=runbook+unsubscribe-prepaid; planning"
