"""BSS (issue 14): an order's resources, unsubscribing them, the task releasing by itself, refusals, counters;
breakpoints on the detail once stopped."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from orchestrator.drs import signing
from orchestrator.simulator import JobSpec, ManualClock, Simulator, load_profile

from .conftest import AK, SK, TOKEN, SimFactory, add, raw

QUERY = "/v2/orders/suscriptions/resources/query"
UNSUBSCRIBE = "/v2/orders/subscriptions/resources/unsubscribe"
ORDER = "CS2401010000ABCD"


def _bss(api_url: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return raw.post(f"{api_url}{path}", json=body,
                    headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json", **headers})


def _resources(url: str, order_id: str = ORDER) -> list[str]:
    r = _bss(url, QUERY, {"order_id": order_id, "only_main_resource": 1})
    assert r.status_code == 200, r.text
    return [d["resource_id"] for d in r.json()["data"]]


def test_order_resources_then_unsubscribe_releases_without_terminate(make_sim: SimFactory,
                                                                     clock: ManualClock) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(period_order_id=ORDER, name="ledger-prod-sync-001"))
    add(sim)  # a pay-per-use task has no order
    r = _bss(api.url, QUERY, {"order_id": ORDER, "only_main_resource": 1})
    body = r.json()
    assert body["total_count"] == 1
    row = body["data"][0]
    assert row["resource_id"] != job and row["order_id"] == ORDER and row["resource_name"] == "ledger-prod-sync-001"
    assert row["status"] == 2 and row["cloud_service_type_code"] == "hws.service.type.drs"
    assert _resources(api.url, "CS0000000000NONE") == []
    r = _bss(api.url, UNSUBSCRIBE, {"resource_ids": [row["resource_id"]], "unsubscribe_type": 1})
    assert r.status_code == 200 and "fail_resource_infos" not in r.json()
    assert r.json()["order_ids"]
    # Before it releases, terminate and delete stay refused (and a client that sends them breaks a rule).
    for action in ("terminate", "delete"):
        assert api.results(job, action=action)[0]["error_code"] == "DRS.M00304"
    assert sim.violations == {"action_on_period_order": 2}
    clock.advance(sim.profile.unsubscribe_release_delay_seconds[1])
    assert sim.status_of(job) == "RELEASE_RESOURCE_STARTED"
    clock.advance(sim.profile.release_seconds[1])
    detail = api.detail([job]).json()["results"][0]
    assert detail["status"] == "RELEASE_RESOURCE_COMPLETE" and detail["period_order"] == {}
    assert api.results(job, action="delete")[0]["status"] == "success"
    assert [c["delete_type"] for c in sim.destructive_calls] == ["terminate", "delete", "delete"]
    assert sim.bss_counts() == {ORDER: {"query": 1, "unsubscribe": 1}, "CS0000000000NONE": {"query": 1}}
    assert _bss(api.url, QUERY, {"order_id": ORDER}).json()["data"][0]["status"] == 3  # closed


def test_canceled_order_variant(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim(profile=load_profile("fast").with_overrides(unsubscribed_order="canceled"))
    job = sim.add_job(JobSpec(period_order_id=ORDER))
    _bss(api.url, UNSUBSCRIBE, {"resource_ids": _resources(api.url), "unsubscribe_type": 1})
    clock.advance(1)
    order = api.detail([job]).json()["results"][0]["period_order"]
    assert order["order_id"] == ORDER and order["status"] == "CANCELED"
    assert _bss(api.url, QUERY, {"order_id": ORDER}).json()["data"][0]["status"] == 3


def test_refusals_repeats_and_unknown_resources(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(period_order_id=ORDER))
    resource = _resources(api.url)[0]
    sim.refuse_unsubscribe(job, "CBC.30000054")
    r = _bss(api.url, UNSUBSCRIBE, {"resource_ids": [resource], "unsubscribe_type": 1})
    assert r.status_code == 200
    assert r.json()["fail_resource_infos"] == [
        {"resource_id": resource, "error_code": "CBC.30000054",
         "error_msg": "The resource cannot be unsubscribed: it has an order being processed."}
    ]
    clock.advance(10)
    assert sim.status_of(job) == "INCRE_TRANSFER_STARTED"  # refused: nothing happens
    assert not sim.violations
    assert "fail_resource_infos" not in _bss(api.url, UNSUBSCRIBE, {"resource_ids": [resource],
                                                                    "unsubscribe_type": 1}).json()
    again = _bss(api.url, UNSUBSCRIBE, {"resource_ids": [resource], "unsubscribe_type": 1}).json()
    assert again["fail_resource_infos"][0]["error_code"] == "CBC.30000067"
    unknown = _bss(api.url, UNSUBSCRIBE, {"resource_ids": ["no-such-resource"], "unsubscribe_type": 1}).json()
    assert unknown["fail_resource_infos"][0]["error_code"] == "CBC.30000010"
    assert sim.violations == {"repeated_unsubscribe": 1, "unsubscribe_unknown_resource": 1}
    assert [c["refused"] for c in sim.bss_calls if c["call"] == "unsubscribe"] == [
        [resource], [], [resource], ["no-such-resource"]]


def test_refusal_over_http_in_chinese(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    job = sim.add_job(JobSpec(period_order_id=ORDER))
    r = raw.post(f"{api.url}/_sim/bss-refusals", json={"job_id": job, "code": "CBC.30000054"})
    assert r.status_code == 200
    r = _bss(api.url, UNSUBSCRIBE, {"resource_ids": _resources(api.url), "unsubscribe_type": 1},
             **{"X-Language": "zh-cn"})
    assert r.json()["fail_resource_infos"][0]["error_msg"] == "资源存在处理中的订单，不能退订。"


@pytest.mark.parametrize(
    "body",
    [
        {"resource_ids": [], "unsubscribe_type": 1},
        {"resource_ids": ["x"]},
        {"resource_ids": ["x"], "unsubscribe_type": 2},
        {"resource_ids": "x", "unsubscribe_type": 1},
    ],
)
def test_bad_unsubscribe_requests(make_sim: SimFactory, body: dict[str, Any]) -> None:
    sim, api = make_sim()
    r = _bss(api.url, UNSUBSCRIBE, body)
    assert r.status_code == 400 and r.json()["error_code"] == "CBC.0100"
    assert sim.violations == {"bad_request": 1}


def test_bss_is_authenticated_like_drs(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    sim.add_job(JobSpec(period_order_id=ORDER))
    r = raw.post(f"{api.url}{QUERY}", json={"order_id": ORDER}, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error_code"]) == (401, "APIGW.0301")
    body = b'{"order_id": "CS2401010000ABCD"}'
    headers = {"Content-Type": "application/json", "X-Sdk-Date": signing.sdk_date(sim.clock.now()),
               "Host": httpx.URL(api.url).netloc.decode()}
    headers["Authorization"] = signing.sign(access_key=AK, secret_key=SK, method="POST", path=QUERY, query=[],
                                            headers=headers, body=body)
    r = raw.post(f"{api.url}{QUERY}", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["total_count"] == 1
    assert sim.requests[-1]["auth"] == "aksk"


def test_bss_faults_are_knobs(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    sim.add_job(JobSpec(period_order_id=ORDER))
    sim.set_fault("bss-unsubscribe", "drop_after")
    resource = _resources(api.url)[0]
    with pytest.raises(httpx.TransportError):
        _bss(api.url, UNSUBSCRIBE, {"resource_ids": [resource], "unsubscribe_type": 1})
    assert sim.bss_counts()[ORDER]["unsubscribe"] == 1  # the answer was lost, the unsubscribe was not
    assert sim.jobs[next(iter(sim.jobs))]["unsubscribed"] is True


def test_rough_refuses_some_unsubscribes() -> None:
    rough = load_profile("rough")
    assert rough.unsubscribe_refuse_rate > 0
    sim = Simulator(profile=rough.with_overrides(unsubscribe_refuse_rate=1.0), clock=ManualClock())
    job = sim.add_job(JobSpec(period_order_id=ORDER))
    status, body = sim.billing.unsubscribe({"resource_ids": [sim.jobs[job]["resource_id"]],
                                            "unsubscribe_type": 1}, "en-us")
    assert status == 200 and body["fail_resource_infos"][0]["error_code"] == "CBC.30000054"


def test_breakpoint_on_mysql_sync_and_migration_only(make_sim: SimFactory, clock: ManualClock) -> None:
    sim, api = make_sim()
    sync = add(sim)
    mig = add(sim, db_use_type="migration")
    mongo = add(sim, db_use_type="migration", engine_type="mongodb")
    before = api.detail([sync]).json()["results"][0]
    assert before["gtid"] == "" and before["incre_start_position"] == ""
    api.terminate(sync, mig, mongo)
    clock.advance(1)
    details = {d["id"]: d for d in api.detail([sync, mig, mongo]).json()["results"]}
    for job in (sync, mig):
        assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}:1-\d+", details[job]["gtid"])
        assert re.fullmatch(r"mysql-bin\.\d{6}:\d+", details[job]["incre_start_position"])
    assert details[mongo]["gtid"] == "" and details[mongo]["incre_start_position"] == ""


def test_inspection_of_bss_calls_counters_and_behaviour(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    sim.add_job(JobSpec(period_order_id=ORDER))
    _resources(api.url)
    calls = raw.get(f"{api.url}/_sim/bss-calls").json()["bss_calls"]
    assert [(c["call"], c["order_ids"]) for c in calls] == [("query", [ORDER])]
    assert raw.get(f"{api.url}/_sim/counters").json()["bss_calls"] == {ORDER: {"query": 1}}
    r = raw.post(f"{api.url}/_sim/behaviour", json={"children_top_level": True, "unsubscribed_order": "canceled"})
    assert r.status_code == 200 and sim.profile.children_top_level and sim.profile.unsubscribed_order == "canceled"
    assert raw.post(f"{api.url}/_sim/behaviour", json={"no_such_key": 1}).status_code == 400
    assert raw.post(f"{api.url}/_sim/behaviour", json={"unsubscribed_order": "gone"}).status_code == 400
    sim.reset_counters()
    assert sim.bss_calls == [] and sim.bss_counts() == {}
