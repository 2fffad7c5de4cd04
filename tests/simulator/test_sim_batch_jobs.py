"""DELETE batch-jobs: per-item rules, the status machine behind terminate/delete, and violation counters."""

from __future__ import annotations

import uuid

from orchestrator.simulator import JobSpec, ManualClock, load_profile

from .conftest import SimFactory, add


def test_results_in_request_order_with_per_item_failures(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    running, failed, deletable = add(sim), add(sim, "INCRE_TRANSFER_FAILED"), add(sim, "CREATE_FAILED")
    r = api.batch((running, "terminate"), (deletable, "delete"), (failed, "delete"))
    assert r.status_code == 202
    assert "x-request-id" in r.headers
    body = r.json()
    assert body["count"] == 3
    assert [x["id"] for x in body["results"]] == [running, deletable, failed]
    assert body["results"][0] == {"id": running, "status": "success"}
    assert body["results"][1] == {"id": deletable, "status": "success"}
    assert body["results"][2]["status"] == "failed"
    assert body["results"][2]["error_code"] == "DRS.M00304"
    assert body["results"][2]["error_msg"]
    assert sim.violations == {"delete_not_deletable": 1}
    calls = sim.destructive_calls
    assert [
        (c["job_id"], c["delete_type"], c["result"], c["error_code"], c["status_before"]) for c in calls
    ] == [
        (running, "terminate", "success", None, "INCRE_TRANSFER_STARTED"),
        (deletable, "delete", "success", None, "CREATE_FAILED"),
        (failed, "delete", "failed", "DRS.M00304", "INCRE_TRANSFER_FAILED"),
    ]


def test_terminate_releases_after_a_jittered_duration(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = add(sim)
    assert api.results(job, action="terminate")[0]["status"] == "success"
    assert sim.status_of(job) == "RELEASE_RESOURCE_STARTED"
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_STARTED"
    clock.advance(sim.profile.release_seconds[0] / 2)
    assert sim.status_of(job) == "RELEASE_RESOURCE_STARTED"
    clock.advance(sim.profile.release_seconds[1])
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_COMPLETE"
    assert api.results(job, action="delete")[0]["status"] == "success"
    assert sim.status_of(job) == "DELETED"
    detail = api.detail([job]).json()["results"][0]
    assert detail["status"] == "DELETED"
    assert not sim.violations


def test_every_stoppable_status_accepts_terminate(make_sim: SimFactory, clock: ManualClock) -> None:
    from orchestrator.drs.codes import STOPPABLE

    sim, api = make_sim()
    plain = sorted(s for s in STOPPABLE if not s.startswith("CHILD_"))
    ids = [add(sim, s) for s in plain]
    assert {r["status"] for r in api.results(*ids, action="force_terminate")} == {"success"}
    clock.advance(1)
    assert {sim.status_of(i) for i in ids} == {"RELEASE_RESOURCE_COMPLETE"}


def test_release_failure_then_retry_and_force(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(release_fails=True))
    api.results(job, action="terminate")
    clock.advance(1)
    assert sim.status_of(job) == "RELEASE_RESOURCE_FAILED"
    assert api.detail([job]).json()["results"][0]["error_message"]
    # terminate on RELEASE_RESOURCE_FAILED is a retry, not a redundant stop
    assert api.results(job, action="terminate")[0]["status"] == "success"
    clock.advance(1)
    assert sim.status_of(job) == "RELEASE_RESOURCE_FAILED"
    assert api.results(job, action="force_terminate")[0]["status"] == "success"
    clock.advance(1)
    assert sim.status_of(job) == "RELEASE_RESOURCE_COMPLETE"
    assert not sim.violations


def test_profile_release_fail_rate(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(release_fail_rate=1.0))
    plain, forced = add(sim), add(sim)
    api.batch((plain, "terminate"), (forced, "force_terminate"))
    clock.advance(1)
    assert sim.status_of(plain) == "RELEASE_RESOURCE_FAILED"
    assert sim.status_of(forced) == "RELEASE_RESOURCE_COMPLETE"


def test_never_releases_stays_started(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(never_releases=True))
    api.results(job, action="force_terminate")
    clock.advance(3600)
    assert sim.status_of(job) == "RELEASE_RESOURCE_STARTED"


def test_redundant_stop_on_released_or_transitional(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    ids = [
        add(sim, s)
        for s in ("RELEASE_RESOURCE_COMPLETE", "RELEASE_RESOURCE_STARTED", "CREATING", "CREATE_FAILED")
    ]
    results = api.results(*ids, action="terminate")
    assert [(r["status"], r["error_code"]) for r in results] == [("failed", "DRS.M00304")] * 4
    assert sim.violations == {"redundant_stop": 4}


def test_busy_items_fail_m01504_then_succeed(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(busy_times=2))
    for _ in range(2):
        r = api.results(job, action="terminate")[0]
        assert (r["status"], r["error_code"]) == ("failed", "DRS.M01504")
        assert "Try again later" in r["error_msg"]
        assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"
    assert api.results(job, action="terminate")[0]["status"] == "success"
    assert not sim.violations  # being told to retry is not a violation


def test_profile_busy_rate(make_sim: SimFactory) -> None:
    profile = load_profile("fast")
    busy = profile.faults_for("batch-jobs").__class__(busy_rate=1.0)
    sim, api = make_sim(profile=profile.with_overrides(faults={"default": busy}))
    job = add(sim)
    assert api.results(job, action="terminate")[0]["error_code"] == "DRS.M01504"


def test_unknown_and_purged_ids(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    gone = add(sim, "RELEASE_RESOURCE_COMPLETE")
    api.results(gone, action="delete")
    deleted_now = add(sim, "CREATE_FAILED")
    api.results(deleted_now, action="delete")
    clock.advance(sim.profile.deleted_retention_seconds / 2)
    # the first is still readable as DELETED: acting on it again is a violation
    assert api.results(gone, action="delete")[0]["error_code"] == "DRS.M05004"
    clock.advance(sim.profile.deleted_retention_seconds)
    never = str(uuid.uuid4())
    results = api.results(gone, never, deleted_now, action="terminate")
    assert [r["error_code"] for r in results] == ["DRS.M05004", "DRS.M00289", "DRS.M05004"]
    assert sim.violations == {"action_on_deleted": 3, "unknown_job_action": 1}
    assert sim.status_of(gone) is None


def test_delete_retention_then_purge(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = add(sim, "CREATE_FAILED")
    api.results(job, action="delete")
    clock.advance(sim.profile.deleted_retention_seconds - 0.01)
    r = api.detail([job])
    assert (r.status_code, r.json()["results"][0]["status"]) == (200, "DELETED")
    assert job in sim.jobs
    clock.advance(0.02)
    r = api.detail([job])
    assert r.status_code == 400
    assert r.json()["results"][0]["error_code"] == "DRS.M05004"
    assert job not in sim.jobs


def test_whole_request_refusals_apply_nothing(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    path = f"/v3/{api.project}/jobs/batch-jobs"
    cases = [
        (
            {
                "jobs": [
                    {"job_id": job, "delete_type": "terminate"},
                    {"job_id": "xyz", "delete_type": "terminate"},
                ]
            },
            "DRS.M00202",
        ),
        (
            {"jobs": [{"job_id": job, "delete_type": "terminate"}, {"job_id": job, "delete_type": "delete"}]},
            "DRS.M00301",
        ),
        ({"jobs": [{"job_id": job, "delete_type": "stop"}]}, "DRS.M00202"),
        ({"jobs": [{"job_id": job}]}, "DRS.M00201"),
        ({"jobs": [{"delete_type": "terminate"}]}, "DRS.M00201"),
        ({"jobs": [{}]}, "DRS.M00202"),
        ({"jobs": []}, "DRS.M00201"),
        ({}, "DRS.M00201"),
        (
            {"jobs": [{"job_id": job, "delete_type": "terminate", "is_show_breakpoint_position": "yes"}]},
            "DRS.M00202",
        ),
        (
            {"jobs": [{"job_id": str(uuid.uuid4()), "delete_type": "terminate"} for _ in range(101)]},
            "DRS.M00202",
        ),
    ]
    for body, code in cases:
        r = api.http.request("DELETE", path, json=body)
        assert (r.status_code, r.json()["error_code"]) == (400, code), body
    r = api.http.request("DELETE", path)
    assert (r.status_code, r.json()["error_code"]) == (400, "DRS.M00201")
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"
    assert sim.destructive_calls == []
    assert sim.violations == {"bad_request": len(cases) + 1}


def test_breakpoint_flag_accepted_and_exposed_on_detail(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = add(sim)
    r = api.http.request(
        "DELETE",
        f"/v3/{api.project}/jobs/batch-jobs",
        json={"jobs": [{"job_id": job, "delete_type": "terminate", "is_show_breakpoint_position": True}]},
    )
    assert r.status_code == 202 and r.json()["results"] == [{"id": job, "status": "success"}]
    clock.advance(1)
    detail = api.detail([job]).json()["results"][0]
    assert detail["gtid"] and detail["incre_start_position"].startswith("mysql-bin.")


def test_creating_and_starting_settle_by_themselves(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    creating = add(sim, "CREATING")
    starting = add(sim, "STARTJOBING", task_type="INCR_TRANS")
    full = add(sim, "STARTJOBING", task_type="FULL_TRANS")
    upgrading = add(sim, "NODE_UPGRADE_START")
    assert api.status([creating, starting, full, upgrading]).json()["results"][0]["status"] == "CREATING"
    clock.advance(1)
    statuses = [x["status"] for x in api.status([creating, starting, full, upgrading]).json()["results"]]
    assert statuses == [
        "CONFIGURATION",
        "INCRE_TRANSFER_STARTED",
        "FULL_TRANSFER_STARTED",
        "NODE_UPGRADE_COMPLETE",
    ]


def test_creating_can_fail(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(create_fail_rate=1.0))
    job = add(sim, "CREATING")
    clock.advance(1)
    assert sim.status_of(job) == "CREATE_FAILED"
    assert api.results(job, action="delete")[0]["status"] == "success"


def test_reedit_child_release_path(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(children=1, child_status="CHILD_TRANSFER_COMPLETE"))
    child = sim.jobs[parent]["child_ids"][0]
    assert sim.jobs[child]["parent_id"] == parent
    assert api.detail([child]).json()["results"][0]["parent_id"] == parent
    assert api.results(child, action="delete")[0]["error_code"] == "DRS.M00304"
    assert api.results(child, action="terminate")[0]["status"] == "success"
    assert sim.status_of(child) == "RELEASE_CHILD_TRANSFER_STARTED"
    clock.advance(1)
    assert sim.status_of(child) == "RELEASE_CHILD_TRANSFER_COMPLETE"
    assert sim.status_of(parent) == "INCRE_TRANSFER_STARTED"  # the parent is not touched
    assert api.results(child, action="delete")[0]["status"] == "success"
    assert sim.violations == {"delete_not_deletable": 1}


def test_orphaned_child_becomes_a_row(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    parent = sim.add_job(JobSpec(status="CREATE_FAILED", children=1))
    child = sim.jobs[parent]["child_ids"][0]
    assert [j["id"] for j in api.list(db_use_type="sync").json()["jobs"]] == [parent]
    api.results(parent, action="delete")
    assert [j["id"] for j in api.list(db_use_type="sync").json()["jobs"]] == [child]
