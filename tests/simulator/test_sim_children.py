"""Re-edit children (issue 11): in the parent's children[], optionally top-level rows; their own status machine;
orphans; dual-active children; job ids compared case-sensitively and shaped as documented."""

from __future__ import annotations

import pytest

from orchestrator.simulator import JobSpec, ManualClock, load_profile

from .conftest import SimFactory, add

DR = {"db_use_type": "cloudDataGuard", "engine_type": "cloudDataGuard-mysql"}


def _rows(api, use: str = "sync") -> list[dict]:  # type: ignore[no-untyped-def]
    r = api.list(db_use_type=use, per_page=0)
    assert r.status_code == 200, r.text
    return list(r.json()["jobs"])


@pytest.mark.parametrize("top_level", [False, True])
def test_reedit_children_in_children_and_optionally_as_rows(make_sim: SimFactory, top_level: bool) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(children_top_level=top_level))
    parent = sim.add_job(JobSpec(children=2, child_status="CHILD_TRANSFER_COMPLETE", name="crm-dev-sync-014"))
    children = sim.jobs[parent]["child_ids"]
    rows = _rows(api)
    by_id = {r["id"]: r for r in rows}
    assert [c["id"] for c in by_id[parent]["children"]] == children
    assert [c["name"] for c in by_id[parent]["children"]] == ["crm-dev-sync-014-child1", "crm-dev-sync-014-child2"]
    assert {c["status"] for c in by_id[parent]["children"]} == {"CHILD_TRANSFER_COMPLETE"}
    assert (set(children) <= set(by_id)) is top_level
    assert len(rows) == (3 if top_level else 1)


def test_children_top_level_can_be_switched_at_run_time(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(children=1))
    assert len(_rows(api)) == 1
    sim.configure(children_top_level=True)
    assert {r["id"] for r in _rows(api)} == {parent, *sim.jobs[parent]["child_ids"]}


def test_child_status_machine_stop_then_delete(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(children=1))
    child = sim.jobs[parent]["child_ids"][0]
    assert api.results(child, action="terminate")[0]["status"] == "success"
    assert sim.status_of(child) == "RELEASE_CHILD_TRANSFER_STARTED"
    clock.advance(1)
    assert api.status([child]).json()["results"][0]["status"] == "RELEASE_CHILD_TRANSFER_COMPLETE"
    assert api.results(child, action="delete")[0]["status"] == "success"
    assert sim.status_of(child) == "DELETED"
    assert _rows(api)[0]["children"] == []
    assert not sim.violations


def test_deleting_a_parent_with_live_children_orphans_them(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(children=1, child_status="CHILD_TRANSFER_COMPLETE"))
    child = sim.jobs[parent]["child_ids"][0]
    api.results(parent, action="terminate")
    clock.advance(1)
    assert sim.status_of(parent) == "RELEASE_RESOURCE_COMPLETE"
    assert sim.status_of(child) == "CHILD_TRANSFER_COMPLETE"  # by default a parent's stop does not reach it
    assert api.results(parent, action="delete")[0]["status"] == "success"  # the service allows it ...
    assert sim.violations == {"parent_deleted_with_live_children": 1}  # ... but it leaves the child behind
    assert child in sim.violation_log[0]["detail"]
    assert [r["id"] for r in _rows(api)] == [child]  # the orphan is now a row of its own
    clock.advance(sim.profile.deleted_retention_seconds + 1)
    assert sim.status_of(parent) is None and sim.status_of(child) == "CHILD_TRANSFER_COMPLETE"


def test_children_first_is_no_violation(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(children=1))
    child = sim.jobs[parent]["child_ids"][0]
    api.results(parent, child, action="terminate")
    clock.advance(1)
    api.results(child, action="delete")
    api.results(parent, action="delete")
    assert not sim.violations


@pytest.mark.parametrize("reaches", [False, True])
def test_parent_stop_reaching_children_is_a_knob(make_sim: SimFactory, clock: ManualClock, reaches: bool) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(parent_stop_reaches_children=reaches))
    parent = sim.add_job(JobSpec(children=1))
    child = sim.jobs[parent]["child_ids"][0]
    api.results(parent, action="terminate")
    clock.advance(1)
    expected = "RELEASE_CHILD_TRANSFER_COMPLETE" if reaches else "CHILD_TRANSFER_STARTED"
    assert sim.status_of(child) == expected


def test_dual_active_children_are_listed_under_their_parent(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(multi_write=True, children=2, **DR))
    rows = _rows(api, "cloudDataGuard")
    assert [r["id"] for r in rows] == [parent]
    assert [c["id"] for c in rows[0]["children"]] == sim.jobs[parent]["child_ids"]
    r = api.results(rows[0]["children"][0]["id"], action="terminate")[0]
    assert r["error_code"] == "DRS.M00308"


def test_ids_are_compared_case_sensitively(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim, "PAUSING")
    upper = job.upper()
    r = api.detail([upper, job], per_page=10)
    assert r.status_code == 400
    results = r.json()["results"]
    assert results[0] == {"id": upper, "error_code": "DRS.M00289", "error_message": "The task does not exist."}
    assert results[1]["status"] == "PAUSING"
    assert api.results(upper, action="terminate")[0]["error_code"] == "DRS.M00289"
    assert sim.status_of(job) == "PAUSING"


@pytest.mark.parametrize("bad", ["656gbd72-1111-4222-8333-cb2c668jb201", "9a470239-2308-4bb5-a6bz-1040402fjb21"])
def test_non_hex_in_the_first_groups_fails_the_whole_call(make_sim: SimFactory, bad: str) -> None:
    sim, api = make_sim()
    good = add(sim)
    for r in (api.detail([good, bad]), api.status([good, bad]), api.batch((good, "terminate"), (bad, "terminate"))):
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["error_code"] == "DRS.M00202" and "results" not in body
        assert bad not in body["error_msg"] and good not in body["error_msg"]  # names neither id nor position
        assert "1" not in body["error_msg"] and "2" not in body["error_msg"]
    assert sim.status_of(good) == "INCRE_TRANSFER_STARTED"
    assert sim.violations == {"bad_request": 3}


def test_alphanumeric_last_group_is_the_documented_shape(make_sim: SimFactory) -> None:
    _sim, api = make_sim()
    r = api.status(["4c6ac8c0-2f51-426a-97b2-cb2c668jb201"])
    assert r.status_code == 200
    assert r.json()["results"][0]["error_code"] == "DRS.M00289"


def test_drs_style_ids_work_everywhere(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(job_id_style="drs"))
    parent = sim.add_job(JobSpec(children=1))
    child = sim.jobs[parent]["child_ids"][0]
    assert all(i[-4:-2] == "jb" and i[-2:].isdigit() for i in (parent, child))
    assert api.results(parent, child, action="terminate")[0]["status"] == "success"
    clock.advance(1)
    assert api.status([parent, child]).json()["results"][1]["status"] == "RELEASE_CHILD_TRANSFER_COMPLETE"
    assert {r["status"] for r in api.results(child, action="delete")} == {"success"}
    assert not sim.violations
