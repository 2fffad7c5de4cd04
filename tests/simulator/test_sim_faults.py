"""Fault injection (throttling, dropped connections, 5xx, latency), routing, X-Language, /_sim/ inspection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestrator.simulator import ApiFaults, ManualClock, Profile, load_profile

from .conftest import PROJECT, SimFactory, add, raw


def _with_faults(**per_api: ApiFaults) -> Profile:
    return load_profile("fast").with_overrides(faults={"default": ApiFaults(), **per_api})


def test_throttling_is_a_token_bucket_per_api(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(
        profile=_with_faults(**{"batch-status": ApiFaults(throttle_rate=2, throttle_burst=2)})
    )
    job = add(sim)
    assert [api.status([job]).status_code for _ in range(2)] == [200, 200]
    r = api.status([job])
    assert r.status_code == 429
    body = r.json()
    assert body["error_code"] == "APIGW.0308"
    assert body["error_msg"] == (
        "The throttling threshold has been reached: policy user over ratelimit,limit:120,time:1 minute"
    )
    assert body["request_id"] == r.headers["x-request-id"]
    assert int(r.headers["Retry-After"]) >= 1
    assert api.list(db_use_type="sync").status_code == 200  # other APIs have their own bucket (none here)
    clock.advance(0.5)
    assert api.status([job]).status_code == 200
    assert api.status([job]).status_code == 429
    assert not sim.violations  # being throttled is not the client's fault


def test_bench_profile_throttles_at_200_per_second(make_sim: SimFactory) -> None:
    bench = load_profile("bench").with_overrides(
        faults={"default": ApiFaults(throttle_rate=200, throttle_burst=200)}
    )
    sim, api = make_sim(profile=bench)
    codes = [api.status([add(sim)]).status_code for _ in range(201)]
    assert codes[:200] == [200] * 200 and codes[200] == 429


def test_dropped_before_processing(make_sim: SimFactory) -> None:
    sim, api = make_sim(profile=_with_faults(**{"batch-jobs": ApiFaults(drop_before_rate=1.0)}))
    job = add(sim)
    with pytest.raises(httpx.TransportError):
        api.terminate(job)
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"
    assert sim.destructive_calls == []
    assert sim.requests[-1]["dropped"] is True and sim.requests[-1]["status"] is None
    assert api.status([job]).status_code == 200  # the next connection works


def test_dropped_after_the_request_took_effect(make_sim: SimFactory) -> None:
    sim, api = make_sim(profile=_with_faults(**{"batch-jobs": ApiFaults(drop_after_rate=1.0)}))
    job = add(sim)
    with pytest.raises(httpx.TransportError):
        api.terminate(job)
    assert sim.status_of(job) == "RELEASE_RESOURCE_STARTED"  # the response was lost, the stop was not
    assert [c["result"] for c in sim.destructive_calls] == ["success"]
    with pytest.raises(httpx.TransportError):
        api.terminate(job)  # a blind resend is a redundant stop
    assert sim.violations == {"redundant_stop": 1}


@pytest.mark.parametrize(("status", "code"), [(500, "DRS.M00004"), (503, "APIGW.0613")])
def test_server_errors_apply_nothing(make_sim: SimFactory, status: int, code: str) -> None:
    faults = ApiFaults(error_5xx_rate=1.0, error_5xx_statuses=(status,))
    sim, api = make_sim(profile=_with_faults(**{"batch-jobs": faults}))
    job = add(sim)
    r = api.terminate(job)
    assert (r.status_code, r.json()["error_code"]) == (status, code)
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"


def test_latency_is_added(make_sim: SimFactory) -> None:
    sim, api = make_sim(profile=_with_faults(list=ApiFaults(latency_ms=60)))
    r = api.list(db_use_type="sync")
    assert r.status_code == 200
    assert r.elapsed.total_seconds() >= 0.06
    assert sim.requests[-1]["duration_ms"] >= 60


def test_rough_profile_injects_every_fault(make_sim: SimFactory, clock: ManualClock) -> None:
    rough = load_profile("rough")
    # Keep rough's rates but drop its latency so the test stays fast.
    faults = {
        k: ApiFaults(**{**v.__dict__, "latency_ms": 0, "latency_jitter_ms": 0})
        for k, v in rough.faults.items()
    }
    sim, api = make_sim(profile=rough.with_overrides(faults=faults), jobs=40, seed=5)
    ids = list(sim.jobs)
    seen: set[Any] = set()
    for n in range(300):
        clock.advance(0.05)  # 10 batch-jobs calls/s: over rough's 5/s for that API
        try:
            r = api.status(ids[:10], per_page=10) if n % 2 else api.terminate(ids[n % len(ids)])
            seen.add(r.status_code)
            if r.status_code == 202:
                seen.update(x.get("error_code") for x in r.json()["results"])
        except httpx.TransportError:
            seen.add("dropped")
    assert {429, "dropped", "DRS.M01504"} <= seen
    assert seen & {500, 502, 503}
    assert any(r["dropped"] and r["route"] == "batch-jobs" for r in sim.requests)


def test_x_language(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    r = api.post("/jobs", {}, headers={"X-Language": "zh-cn"})
    assert r.json() == {"error_code": "DRS.M00201", "error_msg": "db_use_type参数为空"}
    r = api.post("/jobs", {}, headers={"X-Language": "en-us"})
    assert r.json() == {"error_code": "DRS.M00201", "error_msg": "The parameter db_use_type is empty."}
    assert api.post("/jobs", {}).json()["error_msg"] == "The parameter db_use_type is empty."
    r = api.batch((job, "delete"), headers={"X-Language": "zh-cn"})
    assert r.json()["results"][0]["error_msg"] == "当前任务状态不允许调用此接口。"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v3/{PROJECT}/jobs"),
        ("POST", f"/v3/{PROJECT}/jobs/batch-pause"),
        ("DELETE", f"/v3/{PROJECT}/jobs/batch-status"),
        ("POST", f"/v3/{PROJECT}/jobs/"),
        ("GET", f"/v5/{PROJECT}/jobs"),
        ("GET", "/"),
    ],
)
def test_unknown_routes_are_404_apigw_0101(make_sim: SimFactory, method: str, path: str) -> None:
    sim, api = make_sim()
    r = raw.request(method, f"{api.url}{path}", json={})  # no credentials: routing comes first
    assert r.status_code == 404
    assert r.json()["error_code"] == "APIGW.0101"
    assert r.headers["x-request-id"]
    assert sim.requests[-1]["status"] == 404


def test_inspection_endpoints(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = add(sim)
    api.delete(job)
    assert raw.get(f"{api.url}/_sim/violations").json()["violations"] == {"delete_not_deletable": 1}
    calls = raw.get(f"{api.url}/_sim/destructive-calls").json()["destructive_calls"]
    assert [(c["job_id"], c["delete_type"], c["result"]) for c in calls] == [(job, "delete", "failed")]
    reqs = raw.get(f"{api.url}/_sim/requests").json()["requests"]
    assert [(r["method"], r["route"], r["status"], r["auth"]) for r in reqs] == [
        ("DELETE", "batch-jobs", 202, "token")
    ]
    assert reqs[0]["request_id"] and reqs[0]["duration_ms"] >= 0
    assert raw.get(f"{api.url}/_sim/jobs").json()["jobs"][job]["status"] == "INCRE_TRANSFER_STARTED"
    r = raw.post(f"{api.url}/_sim/jobs", json={"status": "PAUSING", "db_use_type": "migration"})
    assert r.status_code == 201 and sim.status_of(r.json()["id"]) == "PAUSING"
    assert raw.post(f"{api.url}/_sim/jobs", json={"status": "NOPE"}).status_code == 400
    assert raw.post(f"{api.url}/_sim/reset-counters").status_code == 200
    assert not sim.violations and sim.requests == [] and sim.destructive_calls == []
    assert raw.get(f"{api.url}/_sim/nothing").status_code == 404


def test_reset_counters_in_process(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    api.delete(add(sim))
    sim.reset_counters()
    assert (sim.violations, sim.requests, sim.destructive_calls, sim.violation_log) == ({}, [], [], [])


def test_concurrent_clients(make_sim: SimFactory, clock: ManualClock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sim, api = make_sim(jobs=0)
    ids = [add(sim) for _ in range(40)]

    def work(chunk: list[str]) -> int:
        with httpx.Client(base_url=api.url, headers=dict(api.http.headers), verify=False) as c:
            c.request(
                "DELETE",
                f"/v3/{PROJECT}/jobs/batch-jobs",
                json={"jobs": [{"job_id": i, "delete_type": "terminate"} for i in chunk]},
            )
            return c.post(
                f"/v3/{PROJECT}/jobs/batch-status", json={"jobs": chunk, "page_req": {"per_page": 0}}
            ).json()["count"]

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(work, [ids[i : i + 5] for i in range(0, 40, 5)]))
    assert counts == [5] * 8
    clock.advance(1)
    assert {sim.status_of(i) for i in ids} == {"RELEASE_RESOURCE_COMPLETE"}
    assert len(sim.destructive_calls) == 40 and not sim.violations
