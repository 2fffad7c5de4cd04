"""Bad read answers as knobs (issue 12): malformed, partial, stale, trickled, frozen, huge; unknown-id answers;
drift between plan and action; the service's own rules still enforced and counted."""

from __future__ import annotations

import json
import socket
import uuid

import httpx
import pytest

from orchestrator.simulator import ANSWER_FAULTS, ManualClock, load_profile

from .conftest import PROJECT, TOKEN, Api, SimFactory, add, raw

READS = ("list", "batch-status", "batch-detail")


def _read(api: Api, route: str, ids: list[str]) -> httpx.Response:
    if route == "list":
        return api.list(db_use_type="sync", per_page=0)
    return api.status(ids, per_page=0) if route == "batch-status" else api.detail(ids, per_page=10)


@pytest.mark.parametrize("route", READS)
def test_malformed_answers_then_a_good_one(make_sim: SimFactory, route: str) -> None:
    sim, api = make_sim()
    ids = [add(sim) for _ in range(3)]
    key = "jobs" if route == "list" else "results"
    for fault in ("not_json", "truncated", "results_null", "array"):
        sim.set_fault(route, fault)
        r = _read(api, route, ids)
        assert r.status_code == 200
        if fault in ("not_json", "truncated"):
            assert r.headers["content-type"].startswith("application/json")
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.content)
            assert len(r.content) == int(r.headers["content-length"])  # the framing is intact
        elif fault == "results_null":
            assert r.json()[key] is None
        else:
            assert isinstance(r.json(), list) and len(r.json()) == 3
        good = _read(api, route, ids).json()  # the fault was for one answer only
        assert isinstance(good, dict) and len(good[key]) == 3
    assert sim.faults_served == {f"{route}:{f}": 1 for f in ("not_json", "truncated", "results_null", "array")}
    assert [r["fault"] for r in sim.requests if r["fault"]] == ["not_json", "truncated", "results_null", "array"]
    assert not sim.violations


@pytest.mark.parametrize("route", READS)
def test_unknown_status_and_missing_ids(make_sim: SimFactory, route: str) -> None:
    sim, api = make_sim()
    ids = [add(sim) for _ in range(3)]
    key = "jobs" if route == "list" else "results"
    sim.set_fault(route, "unknown_status")
    statuses = [i["status"] for i in _read(api, route, ids).json()[key]]
    assert statuses.count("SUSPENDED_BY_OPERATOR") == 1 and statuses.count("INCRE_TRANSFER_STARTED") == 2
    sim.set_fault(route, "missing_ids")
    r = _read(api, route, ids)
    assert r.status_code == 200 and len(r.json()[key]) == 2
    if route != "list":
        assert r.json()["count"] == 2


def test_short_read_is_a_transport_error(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    sim.set_fault("batch-status", "short_read")
    with pytest.raises(httpx.TransportError):
        api.status([job])
    assert api.status([job]).status_code == 200


def test_knob_for_every_answer_until_cleared(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    sim.set_fault("batch-status", "not_json", times=None)
    assert [api.status([job]).content[:1] for _ in range(3)] == [b"<"] * 3
    assert sim.knobs() == [{"route": "batch-status", "fault": "not_json", "times": None, "params": {}}]
    sim.clear_faults()
    assert api.status([job]).json()["count"] == 1 and sim.knobs() == []


def test_knobs_over_http(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    r = raw.post(f"{api.url}/_sim/faults", json={"route": "batch-detail", "fault": "results_null", "times": 2})
    assert r.status_code == 200 and r.json()["knobs"][0]["times"] == 2
    assert [api.detail([job]).json()["results"] for _ in range(3)][:2] == [None, None]
    assert raw.get(f"{api.url}/_sim/faults").json()["served"] == {"batch-detail:results_null": 2}
    assert raw.post(f"{api.url}/_sim/faults", json={"route": "batch-jobs", "fault": "stale"}).status_code == 400
    assert raw.post(f"{api.url}/_sim/faults", json={"route": "nope", "fault": "stale"}).status_code == 400
    raw.post(f"{api.url}/_sim/faults", json={"route": "list", "fault": "array", "times": None})
    assert raw.post(f"{api.url}/_sim/faults/clear", json={}).json() == {"knobs": []}


def test_knob_validation() -> None:
    from orchestrator.simulator import Simulator

    sim = Simulator(profile="fast", clock=ManualClock())
    for route, fault, times in (("batch-jobs", "truncated", 1), ("list", "nope", 1), ("list", "stale", 0)):
        with pytest.raises(ValueError):
            sim.set_fault(route, fault, times)
    assert set(ANSWER_FAULTS) >= {"not_json", "truncated", "stale", "trickle", "freeze", "huge"}


@pytest.mark.parametrize("shape", ["all", "failing"])
def test_detail_400_lists_every_id_or_only_the_failing(make_sim: SimFactory, shape: str) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(unknown_id_results=shape,
                                                                    batch_status_unknown_http_status=400))
    known = [add(sim) for _ in range(3)]
    never = str(uuid.uuid4())
    for call in (api.detail, api.status):
        r = call([known[0], never, *known[1:]], per_page=10)
        assert r.status_code == 400
        results = r.json()["results"]
        if shape == "failing":
            assert [x["id"] for x in results] == [never] and results[0]["error_code"] == "DRS.M00289"
        else:
            assert [x["id"] for x in results] == [known[0], never, *known[1:]]
        assert r.json()["count"] == len(results)


def test_stale_answer_shows_the_previous_status(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = add(sim)
    api.terminate(job)
    clock.advance(1)
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_COMPLETE"
    sim.set_fault("batch-status", "stale")
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_STARTED"  # a flip-back
    sim.set_fault("batch-detail", "stale")
    assert api.detail([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_STARTED"
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_COMPLETE"


def test_terminate_on_a_stale_reading_is_excused_once(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = add(sim)
    api.terminate(job)
    sim.set_fault("batch-status", "stale")
    assert api.status([job]).json()["results"][0]["status"] == "INCRE_TRANSFER_STARTED"  # the lie
    assert api.results(job, action="terminate")[0]["error_code"] == "DRS.M00304"
    assert not sim.violations and len(sim.drift_refusals) == 1
    assert api.results(job, action="terminate")[0]["error_code"] == "DRS.M00304"  # a blind repeat
    assert sim.violations == {"redundant_stop": 1}


@pytest.mark.parametrize(
    ("start", "change", "after", "action", "rule"),
    [
        ("RELEASE_RESOURCE_COMPLETE", "restart", "INCRE_TRANSFER_STARTED", "delete", "delete_not_deletable"),
        ("INCRE_TRANSFER_STARTED", "deletable", "RELEASE_RESOURCE_COMPLETE", "terminate", "redundant_stop"),
        ("INCRE_TRANSFER_STARTED", "gain_order", "INCRE_TRANSFER_STARTED", "terminate", "action_on_period_order"),
    ],
)
def test_scripted_drift_between_plan_and_action(
    make_sim: SimFactory, start: str, change: str, after: str, action: str, rule: str
) -> None:
    sim, api = make_sim()
    job = add(sim, start)
    sim.drift(job, change, after_reads=1)
    plan = api.detail([job]).json()["results"][0]  # the plan's reading, before the change
    assert plan["status"] == start and not plan["period_order"]
    assert sim.status_of(job) == after
    r = api.results(job, action=action)[0]
    assert (r["status"], r["error_code"]) == ("failed", "DRS.M00304")  # the service's rule still holds
    assert not sim.violations and [d["job_id"] for d in sim.drift_refusals] == [job]
    fresh = api.detail([job]).json()["results"][0]  # a client that reads again sees the change
    assert fresh["status"] == after
    if change == "gain_order":
        assert fresh["period_order"]["order_id"] and sim.jobs[job]["resource_id"]
    api.results(job, action=action)  # acting against the fresh reading is the client's fault
    assert sim.violations == {rule: 1}


def test_an_order_gained_is_excused_until_a_detail_answer_showed_it(make_sim: SimFactory) -> None:
    """A status answer does not show period_order: a refusal because of an order the client has not been shown in
    a detail answer is the world's doing (drift_refusals); after a detail answer showed it, it is a violation."""
    sim, api = make_sim()
    job = add(sim, "INCRE_TRANSFER_STARTED")
    sim.drift(job, "gain_order")
    assert api.status([job]).json()["results"][0]["status"] == "INCRE_TRANSFER_STARTED"
    assert api.results(job, action="terminate")[0]["error_code"] == "DRS.M00304"
    assert not sim.violations and [d["job_id"] for d in sim.drift_refusals] == [job]
    assert api.detail([job]).json()["results"][0]["period_order"]["order_id"]
    api.results(job, action="terminate")
    assert sim.violations == {"action_on_period_order": 1}


def test_drift_over_http_and_validation(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim, "RELEASE_RESOURCE_COMPLETE")
    assert raw.post(f"{api.url}/_sim/drift", json={"job_id": job, "change": "restart"}).status_code == 200
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"
    assert raw.post(f"{api.url}/_sim/drift", json={"job_id": job, "change": "melt"}).status_code == 400
    assert raw.post(f"{api.url}/_sim/drift", json={"job_id": str(uuid.uuid4()), "change": "restart"}
                    ).status_code == 404


@pytest.mark.parametrize("shape", ["failing", "all"])
def test_a_task_purged_mid_release_reads_as_unknown(make_sim: SimFactory, shape: str) -> None:
    """drift "purge": someone else deleted the task and the service forgot it. With batch-status answering an
    unknown id with a 400 (§14.4), its results list only that id, or every id (§10.4 / §14)."""
    sim, api = make_sim()
    sim.configure(batch_status_unknown_http_status=400, unknown_id_results=shape)
    gone, other = add(sim, "RELEASE_RESOURCE_STARTED"), add(sim, "RELEASE_RESOURCE_STARTED")
    sim.drift(gone, "purge", after_reads=1)
    assert api.status([gone, other]).status_code == 200  # the reading before it was purged
    assert sim.status_of(gone) is None and gone not in sim.jobs
    r = api.status([gone, other])
    assert r.status_code == 400
    listed = {i["id"]: i for i in r.json()["results"]}
    assert listed[gone]["error_code"] == "DRS.M05004"  # deleted, and no longer kept
    assert (other in listed) is (shape == "all")


def test_random_drift_rate(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(drift_rate=1.0))
    job = add(sim, "RELEASE_RESOURCE_COMPLETE")
    assert api.status([job]).json()["results"][0]["status"] == "RELEASE_RESOURCE_COMPLETE"
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"  # it ran again right after that reading
    assert api.results(job, action="delete")[0]["error_code"] == "DRS.M00304"
    assert not sim.violations and len(sim.drift_refusals) == 1


def test_trickle_sends_byte_by_byte(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    sim.set_fault("batch-status", "trickle", byte_ms=1)
    body = json.dumps({"jobs": [job]}).encode()
    url = httpx.URL(api.url)
    with socket.create_connection((url.host, url.port or 80)) as s:
        s.sendall(b"POST /v3/%s/jobs/batch-status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Auth-Token: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (PROJECT.encode(), TOKEN.encode(), len(body), body))
        reads = []
        while chunk := s.recv(65536):
            reads.append(chunk)
    answer = b"".join(reads)
    payload = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(payload)["results"][0]["id"] == job
    assert len(reads) > len(payload) // 2  # it came in many small pieces, not one write


def test_freeze_never_answers(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    sim.set_fault("batch-detail", "freeze")
    with httpx.Client(base_url=api.url, headers=dict(api.http.headers), timeout=0.3) as c, \
            pytest.raises(httpx.ReadTimeout):
        c.post(f"/v3/{PROJECT}/jobs/batch-detail", json={"jobs": [job]})
    sim.set_fault("batch-detail", "freeze", seconds=0.05)  # a bounded freeze ends with the connection closed
    with pytest.raises(httpx.TransportError):
        api.detail([job])
    assert api.detail([job]).status_code == 200
    assert [r["fault"] for r in sim.requests][:2] == ["freeze", "freeze"]
    assert sim.requests[0]["status"] is None


def test_huge_answer_is_streamed_and_a_client_may_hang_up(make_sim: SimFactory, capfd) -> None:  # type: ignore[no-untyped-def]
    sim, api = make_sim()
    job = add(sim)
    sim.set_fault("batch-status", "huge", mib=4)
    with api.http.stream("POST", f"/v3/{PROJECT}/jobs/batch-status", json={"jobs": [job]}) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        size = sum(len(c) for c in r.iter_raw())
    assert size >= 4 * 1024 * 1024
    sim.set_fault("batch-status", "huge", mib=64)
    with httpx.Client(base_url=api.url, headers=dict(api.http.headers)) as c, \
            c.stream("POST", f"/v3/{PROJECT}/jobs/batch-status", json={"jobs": [job]}) as r:
        next(r.iter_raw())  # read a little, then hang up mid-answer
    assert api.status([job]).status_code == 200  # the server lives on
    sim.stop()
    assert "Traceback" not in capfd.readouterr().err
