"""Several simulators as regions of one account (issue 15), X-Language on every error (issue 17), the clock."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock, ManualClock, RealClock
from orchestrator.drs import signing
from orchestrator.simulator import Simulator, load_profile

from .conftest import AK, IAM_USER, PROJECT, SK, TOKEN, SimFactory, add, raw

OTHER = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def regions(make_sim: SimFactory, clock: ManualClock) -> Any:
    a, _ = make_sim()
    b = a.sibling(project_id=OTHER, region="ap-southeast-1", seed=9)
    url_b = b.start()
    yield a, b, url_b
    b.stop()


def _token(url: str, scope: dict[str, Any]) -> str:
    name, password, domain = IAM_USER
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "password": password, "domain": {"name": domain}}}}, "scope": {"project": scope}}}
    r = raw.post(f"{url}/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["token"]["project"]["id"] in (PROJECT, OTHER)
    return r.headers["x-subject-token"]


def _list(url: str, project: str, headers: dict[str, str]) -> httpx.Response:
    return raw.post(f"{url}/v3/{project}/jobs", json={"db_use_type": "sync"},
                    headers={"Content-Type": "application/json", **headers})


def test_each_region_has_its_own_project_and_world(regions: Any) -> None:
    a, b, _url_b = regions
    job_a, job_b = add(a), add(b)
    assert set(a.jobs) == {job_a} and set(b.jobs) == {job_b}
    assert b.iam is a.iam and b.project_id == OTHER


def test_project_scoped_tokens_by_name_or_id_from_either_iam(regions: Any) -> None:
    a, _b, url_b = regions
    for scope in ({"name": "ap-southeast-1"}, {"id": OTHER}):
        token = _token(a.url, scope)  # issued by one region's IAM endpoint ...
        assert _list(url_b, OTHER, {"X-Auth-Token": token}).status_code == 200  # ... valid in the other
        r = _list(a.url, PROJECT, {"X-Auth-Token": token})
        assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")
    token_a = _token(url_b, {"name": "cn-north-4"})
    assert _list(a.url, PROJECT, {"X-Auth-Token": token_a}).status_code == 200
    r = _list(url_b, OTHER, {"X-Auth-Token": token_a})
    assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")
    r = _list(url_b, OTHER, {"X-Auth-Token": TOKEN})  # the configured token is scoped to region A's project
    assert r.status_code == 403
    unknown = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": IAM_USER[0], "password": IAM_USER[1], "domain": {"name": IAM_USER[2]}}}},
        "scope": {"project": {"name": "eu-west-0"}}}}
    assert raw.post(f"{url_b}/v3/auth/tokens", json=unknown).status_code == 401


def test_aksk_with_another_projects_x_project_id_is_403(regions: Any) -> None:
    _a, b, url_b = regions
    body = b'{"db_use_type": "sync"}'
    for project_header, status in ((OTHER, 200), (PROJECT, 403)):
        headers = {"Content-Type": "application/json", "X-Project-Id": project_header,
                   "X-Sdk-Date": signing.sdk_date(b.clock.now()), "Host": httpx.URL(url_b).netloc.decode()}
        headers["Authorization"] = signing.sign(access_key=AK, secret_key=SK, method="POST",
                                                path=f"/v3/{OTHER}/jobs", query=[], headers=headers, body=body)
        r = raw.post(f"{url_b}/v3/{OTHER}/jobs", content=body, headers=headers)
        assert r.status_code == status, r.text


def test_a_project_name_belongs_to_one_id() -> None:
    a = Simulator(profile="fast", clock=ManualClock())
    with pytest.raises(ValueError):
        a.sibling(project_id=OTHER, region="cn-north-4")


# -- X-Language ----------------------------------------------------------------------------------------------


def test_every_error_msg_honours_zh_cn(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    zh = {"X-Language": "zh-cn", "Content-Type": "application/json"}
    r = raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=zh)
    assert (r.json()["error_code"], r.json()["error_msg"]) == ("APIGW.0301", "IAM认证信息错误：x-auth-token not found")
    r = raw.post(f"{api.url}/v3/{PROJECT}/nothing", json={}, headers=zh)
    assert r.json()["error_msg"] == "API不存在或未在环境中发布。"
    r = api.post("/jobs", {}, headers={"X-Language": "zh-cn"})
    assert r.json()["error_msg"] == "db_use_type参数为空"
    r = raw.post(f"{api.url}/v3/{OTHER}/jobs", json={"db_use_type": "sync"}, headers={**zh, "X-Auth-Token": TOKEN})
    assert r.json()["error_msg"] == "项目ID无效。"
    r = api.post("/jobs/batch-detail", {"jobs": ["00000000-0000-4000-8000-000000000000"]},
                 headers={"X-Language": "zh-cn"})
    assert r.json()["results"][0]["error_message"] == "任务不存在。"
    sim.set_fault("batch-status", "error_5xx", status=503)
    r = api.post("/jobs/batch-status", {"jobs": [add(sim)]}, headers={"X-Language": "zh-cn"})
    assert (r.status_code, r.json()["error_msg"]) == (503, "IAM服务当前不可用。")
    assert sim.languages == {"zh-cn": 6}


def test_languages_are_counted(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    for lang in ("zh-cn", "en-us"):
        api.post("/jobs", {"db_use_type": "sync"}, headers={"X-Language": lang})
    api.list(db_use_type="sync")
    assert sim.languages == {"zh-cn": 1, "en-us": 1, "": 1}
    assert [r["language"] for r in sim.requests] == ["zh-cn", "en-us", ""]
    assert raw.get(f"{api.url}/_sim/languages").json() == {"languages": {"zh-cn": 1, "en-us": 1, "": 1}}
    assert raw.get(f"{api.url}/_sim/counters").json()["languages"] == {"zh-cn": 1, "en-us": 1, "": 1}


# -- the clock and the profile keys -------------------------------------------------------------------------


def test_one_manual_clock() -> None:
    assert FakeClock is ManualClock
    clock = ManualClock()
    start = clock.now()
    asyncio.run(clock.sleep(2.5))
    assert clock.monotonic() == 2.5 and (clock.now() - start).total_seconds() == 2.5
    with pytest.raises(ValueError):
        clock.advance(-1)

    def advance() -> None:
        for _ in range(1000):
            clock.advance(0.001)

    threads = [threading.Thread(target=advance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert round(clock.monotonic(), 6) == 6.5
    assert RealClock().monotonic() > 0


@pytest.mark.parametrize(
    "text",
    [
        '[behaviour]\nchildren_top_level = "yes"\n',
        '[behaviour]\nunknown_id_results = "some"\n',
        '[behaviour]\nunsubscribed_order = "gone"\n',
        "[behaviour]\ndrift_rate = 1.5\n",
        "[timing]\nunsubscribe_release_delay_seconds = [5, 1]\n",
        "[faults.batch-status]\nstale_rate = 2\n",
        "[faults.bss-querry]\n",
    ],
)
def test_new_profile_keys_are_validated(tmp_path: Any, text: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError):
        load_profile(bad)


def test_new_profile_keys_load(tmp_path: Any) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[behaviour]\nchildren_top_level = true\nunknown_id_results = "failing"\n'
                    "[faults.batch-detail]\ntrickle_rate = 0.5\ntrickle_byte_ms = 3\n")
    p = load_profile(good)
    assert p.children_top_level and p.unknown_id_results == "failing"
    assert p.faults_for("batch-detail").trickle_rate == 0.5 and p.faults_for("batch-detail").trickle_byte_ms == 3
    rough = load_profile("rough")
    assert rough.drift_rate > 0 and rough.faults_for("batch-status").stale_rate > 0
    assert rough.faults_for("batch-status").freeze_seconds > 0  # a bounded freeze: rough runs stay finite
