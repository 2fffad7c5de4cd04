"""Dual-active DR parents and children, yearly/monthly orders, batch-detail (drs-api.md §3, §5, §9)."""

from __future__ import annotations

import uuid

from orchestrator.simulator import JobSpec, ManualClock, load_profile

from .conftest import SimFactory, add, raw

DR = {"db_use_type": "cloudDataGuard", "engine_type": "cloudDataGuard-mysql"}


def test_dual_active_child_id_is_refused(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(multi_write=True, children=2, **DR))
    children = sim.jobs[parent]["child_ids"]
    assert len(children) == 2
    for action in ("terminate", "force_terminate", "delete"):
        r = api.results(children[0], action=action)[0]
        assert (r["status"], r["error_code"]) == ("failed", "DRS.M00308")
    assert sim.violations == {"child_id": 3}
    assert sim.status_of(children[0]) == "INCRE_TRANSFER_STARTED"


def test_dual_active_parent_carries_its_children(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(multi_write=True, children=2, **DR))
    children = sim.jobs[parent]["child_ids"]
    detail = api.detail([parent, *children]).json()["results"]
    assert [d["multi_write"] for d in detail] == [True, True, True]
    assert [d.get("parent_id") for d in detail] == [None, parent, parent]
    assert api.results(parent, action="terminate")[0]["status"] == "success"
    assert {sim.status_of(c) for c in children} == {"RELEASE_RESOURCE_STARTED"}
    clock.advance(1)
    statuses = [x["status"] for x in api.status([parent, *children]).json()["results"]]
    assert statuses == ["RELEASE_RESOURCE_COMPLETE"] * 3
    assert api.results(parent, action="delete")[0]["status"] == "success"
    assert {sim.status_of(c) for c in children} == {"DELETED"}
    clock.advance(sim.profile.deleted_retention_seconds + 1)
    assert [sim.status_of(i) for i in (parent, *children)] == [None, None, None]
    assert not sim.violations


def test_period_order_refuses_terminate_and_delete(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(period_order_id="CS2401010000ABCD"))
    order = api.detail([job]).json()["results"][0]["period_order"]
    assert order["order_id"] == "CS2401010000ABCD" and order["period_type"] in (2, 3)
    for action in ("terminate", "force_terminate", "delete"):
        r = api.results(job, action=action)[0]
        assert (r["status"], r["error_code"]) == ("failed", "DRS.M00304")
        assert "unsubscribe" in r["error_msg"]
    assert sim.violations == {"action_on_period_order": 3}
    row = api.list(db_use_type="sync").json()["jobs"][0]
    assert "UNSUBSCRIBE" in row["job_action"]["available_actions"]
    assert "FREE_RESOURCE" not in row["job_action"]["available_actions"]


def test_pay_per_use_has_empty_period_order(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    assert api.detail([add(sim)]).json()["results"][0]["period_order"] == {}


def test_unsubscribe_releases_then_delete_is_allowed(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(unsubscribed_order="canceled"))
    job = sim.add_job(JobSpec(period_order_id="CS2401010000ABCD", **DR))
    assert sim.unsubscribe(job) == "RELEASE_RESOURCE_STARTED"
    clock.advance(1)
    assert sim.status_of(job) == "RELEASE_RESOURCE_COMPLETE"
    assert api.detail([job]).json()["results"][0]["period_order"]["status"] == "CANCELED"
    assert api.results(job, action="delete")[0]["status"] == "success"
    assert not sim.violations


def test_unsubscribe_over_http(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(period_order_id="CS2401010000ABCD"))
    r = raw.post(f"{api.url}/_sim/unsubscribe/{job}")
    assert r.json() == {"id": job, "status": "RELEASE_RESOURCE_STARTED"}
    assert raw.post(f"{api.url}/_sim/unsubscribe/{job}").status_code == 409
    assert raw.post(f"{api.url}/_sim/unsubscribe/{uuid.uuid4()}").status_code == 404


def test_period_jobs_cannot_be_migration_and_dual_needs_dr() -> None:
    import pytest

    with pytest.raises(ValueError):
        JobSpec(db_use_type="migration", period_order_id="CS1").validate()
    with pytest.raises(ValueError):
        JobSpec(db_use_type="sync", multi_write=True).validate()
    with pytest.raises(ValueError):
        JobSpec(status="RUNNING").validate()


def test_detail_400_with_results_for_unknown_ids(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    known = add(sim)
    purged = add(sim, "CREATE_FAILED")
    api.results(purged, action="delete")
    clock.advance(sim.profile.deleted_retention_seconds + 1)
    never = str(uuid.uuid4())
    r = api.detail([known, never, purged], per_page=10)
    assert r.status_code == 400
    body = r.json()
    assert body["count"] == 3
    assert body["results"][0]["id"] == known and body["results"][0]["status"] == "INCRE_TRANSFER_STARTED"
    assert body["results"][1]["error_code"] == "DRS.M00289"
    assert body["results"][2]["error_code"] == "DRS.M05004"
    assert "error_message" in body["results"][1]
    assert api.detail([known]).status_code == 200
    assert not sim.violations  # asking about a gone task is how a client learns it is gone


def test_detail_fields(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(name="orders-prod", tags=(("env", "prod"),), task_type="INCR_TRANS"))
    clock.advance(5)
    d = api.detail([job]).json()["results"][0]
    for key in (
        "id",
        "name",
        "status",
        "description",
        "db_use_type",
        "engine_type",
        "task_type",
        "job_direction",
        "period_order",
        "multi_write",
        "children",
        "tags",
        "create_time",
        "update_time",
        "gtid",
        "incre_start_position",
        "error_code",
        "error_message",
        "inst_info",
    ):
        assert key in d, key
    assert d["name"] == "orders-prod" and d["tags"] == [{"key": "env", "value": "prod"}]
    assert d["children"] == [] and d["multi_write"] is False and d["task_type"] == "INCR_TRANS"
    assert d["create_time"].isdigit() and len(d["create_time"]) == 13
    assert int(d["create_time"]) == int(clock.now().timestamp() * 1000) - 5000
    assert d["inst_info"]["engine_type"] == "mysql" and d["inst_info"]["status"] == "active"


def test_snapshot_matches_http(make_sim: SimFactory) -> None:
    sim, api = make_sim(jobs=40, seed=11)
    ids = list(sim.jobs)
    statuses = {x["id"]: x["status"] for x in api.status(ids, per_page=0).json()["results"]}
    assert statuses == {i: j["status"] for i, j in sim.jobs.items()}
    r = raw.get(f"{api.url}/_sim/jobs")
    assert set(r.json()["jobs"]) == set(ids)
