"""batch-status / batch-detail / list paging and request validation (reference/drs-api.md §4-§6)."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.simulator import JobSpec

from .conftest import Api, SimFactory, add


@pytest.fixture
def seven(make_sim: SimFactory) -> tuple[list[str], Api, object]:
    sim, api = make_sim()
    ids = [add(sim) for _ in range(7)]
    return ids, api, sim


def test_batch_status_without_page_req_returns_five(seven) -> None:  # type: ignore[no-untyped-def]
    ids, api, sim = seven
    r = api.status(ids)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 5
    assert [x["id"] for x in body["results"]] == ids[:5]
    assert all(x["status"] == "INCRE_TRANSFER_STARTED" for x in body["results"])
    assert not sim.violations


def test_batch_status_second_page_and_per_page(seven) -> None:  # type: ignore[no-untyped-def]
    ids, api, _ = seven
    assert [x["id"] for x in api.status(ids, cur_page=2).json()["results"]] == ids[5:]
    assert api.status(ids, per_page=100).json()["count"] == 7
    assert api.status(ids, per_page=0).json()["count"] == 7
    assert api.status(ids, per_page=0, cur_page=0).json()["count"] == 7
    assert api.status(ids, per_page=3, cur_page=3).json()["count"] == 1


@pytest.mark.parametrize(
    ("page", "code"),
    [
        ({"per_page": 5, "cur_page": 3}, "DRS.M00211"),
        ({"per_page": 0, "cur_page": 2}, "DRS.M00211"),
        ({"per_page": 101}, "DRS.M00210"),
        ({"per_page": -1}, "DRS.M00210"),
        ({"cur_page": 0, "per_page": 5}, "DRS.M00210"),
        ({"per_page": "5"}, "DRS.M00210"),
    ],
)
def test_batch_paging_out_of_range(seven, page: dict[str, object], code: str) -> None:  # type: ignore[no-untyped-def]
    ids, api, sim = seven
    for call in (api.status, api.detail):
        r = call(ids, **page)
        assert r.status_code == 400
        assert r.json()["error_code"] == code
    assert sim.violations["bad_request"] == 2


def test_batch_status_request_shape(seven) -> None:  # type: ignore[no-untyped-def]
    ids, api, sim = seven
    cases = [
        ({"jobs": [ids[0], ids[0]]}, "DRS.M00301"),
        ({"jobs": [ids[0], "not-a-uuid"]}, "DRS.M00202"),
        ({"jobs": ["9a47023g-2308-4bb5-a6bc-1040402fjb21"]}, "DRS.M00202"),  # non-hex in the first groups
        ({"jobs": []}, "DRS.M00201"),
        ({}, "DRS.M00201"),
        ({"jobs": ids[0]}, "DRS.M00202"),
        ({"jobs": [ids[0]], "page_req": []}, "DRS.M00202"),
    ]
    for body, code in cases:
        r = api.post("/jobs/batch-status", body)
        assert (r.status_code, r.json()["error_code"]) == (400, code), body
    assert sim.violations["bad_request"] == len(cases)


def test_body_that_is_not_json(seven) -> None:  # type: ignore[no-untyped-def]
    _, api, sim = seven
    r = api.http.post(f"/v3/{api.project}/jobs/batch-status", content=b"{not json")
    assert (r.status_code, r.json()["error_code"]) == (400, "DRS.M00200")
    r = api.http.post(f"/v3/{api.project}/jobs/batch-status", content=b"")
    assert (r.status_code, r.json()["error_code"]) == (400, "DRS.M00201")
    assert sim.violations["bad_request"] == 2


def test_batch_status_unknown_and_purged_ids(make_sim: SimFactory, clock) -> None:  # type: ignore[no-untyped-def]
    sim, api = make_sim()
    live, gone = add(sim), add(sim, "CREATE_FAILED")
    assert api.delete(gone).json()["results"][0]["status"] == "success"
    clock.advance(sim.profile.deleted_retention_seconds + 1)
    never = str(uuid.uuid4())
    r = api.status([live, gone, never], per_page=10)
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0] == {"id": live, "status": "INCRE_TRANSFER_STARTED"}
    assert results[1]["error_code"] == "DRS.M05004" and "error_message" in results[1]
    assert results[2]["error_code"] == "DRS.M00289" and "error_msg" not in results[2]
    assert "status" not in results[2]


def test_batch_status_unknown_is_400_when_profile_says(make_sim: SimFactory) -> None:
    from orchestrator.simulator import load_profile

    sim, api = make_sim(profile=load_profile("fast").with_overrides(batch_status_unknown_http_status=400))
    r = api.status([add(sim), str(uuid.uuid4())], per_page=10)
    assert r.status_code == 400
    assert r.json()["count"] == 2


def test_list_paging_defaults_and_limits(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    for _ in range(23):
        add(sim, db_use_type="migration")
    r = api.list(db_use_type="migration")
    assert r.status_code == 200
    assert (r.json()["total_record"], len(r.json()["jobs"])) == (23, 10)
    assert len(api.list(db_use_type="migration", cur_page=3).json()["jobs"]) == 3
    assert len(api.list(db_use_type="migration", per_page=0).json()["jobs"]) == 23
    assert len(api.list(db_use_type="migration", cur_page=0, per_page=10).json()["jobs"]) == 23
    r = api.list(db_use_type="migration", cur_page=4)
    assert (r.status_code, r.json()["error_code"]) == (400, "DRS.M00211")
    assert api.list(db_use_type="sync").json() == {"total_record": 0, "jobs": []}
    assert api.list(db_use_type="migration", per_page=101).json()["error_code"] == "DRS.M00210"


def test_list_requires_db_use_type_and_rejects_empty_eps(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    cases = [
        ({}, "DRS.M00201"),
        ({"db_use_type": "replication"}, "DRS.M00202"),
        ({"db_use_type": "sync", "enterprise_project_id": ""}, "DRS.M00202"),
        ({"db_use_type": "sync", "status": "RUNNING"}, "DRS.M00202"),
        ({"db_use_type": "sync", "name": ",".join(str(uuid.uuid4()) for _ in range(101))}, "DRS.M00202"),
    ]
    for body, code in cases:
        r = api.post("/jobs", body)
        assert (r.status_code, r.json()["error_code"]) == (400, code), body
    assert sim.violations["bad_request"] == len(cases)
    assert api.list(db_use_type="sync", enterprise_project_id=None).status_code == 200
    assert api.list(db_use_type="sync", enterprise_project_id="0").status_code == 200


def test_list_filters_rows_and_children(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    a = sim.add_job(JobSpec(name="orders-prod-sync-001", status="INCRE_TRANSFER_STARTED", children=1))
    b = sim.add_job(JobSpec(name="billing-dev-sync-002", status="PAUSING", engine_type="postgresql"))
    dr = sim.add_job(
        JobSpec(
            db_use_type="cloudDataGuard",
            engine_type="cloudDataGuard-mysql",
            multi_write=True,
            children=2,
            name="ledger-dr",
        )
    )
    rows = api.list(db_use_type="sync").json()
    assert rows["total_record"] == 2  # the re-edit child is nested, not a row
    by_id = {j["id"]: j for j in rows["jobs"]}
    child = by_id[a]["children"][0]
    assert child["status"] == "CHILD_TRANSFER_STARTED" and "job_action" in child and "error_msg" in child
    assert by_id[b]["children"] == []
    row = by_id[b]
    assert len(row["create_time"]) == 19 and row["create_time"][4] == "-" and row["create_time"][13] == ":"
    assert {"available_actions", "unavailable_actions", "current_action"} <= set(row["job_action"])
    assert "FREE_RESOURCE" in row["job_action"]["available_actions"]
    assert [j["id"] for j in api.list(db_use_type="sync", name="ORDERS").json()["jobs"]] == [a]
    assert [j["id"] for j in api.list(db_use_type="sync", name=f"{a},{b}").json()["jobs"]] == [b, a] or {
        j["id"] for j in api.list(db_use_type="sync", name=f"{a},{b}").json()["jobs"]
    } == {a, b}
    assert [j["id"] for j in api.list(db_use_type="sync", name=b).json()["jobs"]] == [b]
    assert [j["id"] for j in api.list(db_use_type="sync", status="PAUSING").json()["jobs"]] == [b]
    assert [j["id"] for j in api.list(db_use_type="sync", engine_type="postgresql").json()["jobs"]] == [b]
    dr_rows = api.list(db_use_type="cloudDataGuard").json()
    assert dr_rows["total_record"] == 1
    assert len(dr_rows["jobs"][0]["children"]) == 2 and dr_rows["jobs"][0]["id"] == dr
    assert not sim.violations


def test_list_tag_filter_in_both_shapes(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    a = sim.add_job(JobSpec(tags=(("env", "prod"),)))
    sim.add_job(JobSpec(tags=(("env", "dev"),)))
    assert [j["id"] for j in api.list(db_use_type="sync", tags={"env": "prod"}).json()["jobs"]] == [a]
    assert [
        j["id"] for j in api.list(db_use_type="sync", tags=[{"key": "env", "value": "prod"}]).json()["jobs"]
    ] == [a]
