"""Huawei's official SDK (huaweicloudsdkdrs, the `sdk` extra) against the simulator with AK/SK.

Quirks seen with 3.1.219 (also in the notes): an `http://` endpoint is kept as is (no TLS needed); each v3
call used here emits a DeprecationWarning; a 400 whose body lists results (unknown id in batch-detail) raises
ClientRequestException with error_code "400" and the raw body in error_msg.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

sdk = pytest.importorskip(
    "huaweicloudsdkdrs.v3",
    reason="Huawei's SDK is not installed: pip install '.[sdk]' (huaweicloudsdkdrs) to run the SDK test",
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException  # noqa: E402

from orchestrator.simulator import JobSpec, ManualClock, Simulator  # noqa: E402

pytestmark = pytest.mark.sdk

AK, SK = "SDKTESTAK00000000000", "sdkTestSecretKey000000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def world() -> Iterator[tuple[Simulator, str, ManualClock]]:
    # The SDK stamps X-Sdk-Date with the real time, so the manual clock starts at the real time.
    clock = ManualClock(datetime.now(UTC))
    sim = Simulator(project_id=PROJECT, seed=9, jobs=0, profile="fast", aksk={AK: SK}, clock=clock)
    with sim.serve() as url, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the v3 calls are deprecated in 3.1.219
        yield sim, url, clock


def _client(url: str, sk: str = SK) -> Any:
    return (
        sdk.DrsClient.new_builder()
        .with_credentials(BasicCredentials(AK, sk, PROJECT))
        .with_endpoint(url)  # http:// is kept; a bare host would get https://
        .build()
    )


def test_sdk_full_teardown(world: tuple[Simulator, str, ManualClock]) -> None:
    sim, url, clock = world
    ids = [sim.add_job(JobSpec(name=f"sdk-{n}")) for n in range(7)]
    client = _client(url)

    listed = client.show_job_list(
        sdk.ShowJobListRequest(body=sdk.QueryJobsReq(db_use_type="sync", per_page=100))
    )
    assert listed.total_record == 7 and {j.id for j in listed.jobs} == set(ids)
    assert all(j.job_action is not None for j in listed.jobs)

    page = client.batch_list_job_status(
        sdk.BatchListJobStatusRequest(body=sdk.BatchQueryJobReqPage(jobs=ids))
    )
    assert page.count == 5 and len(page.results) == 5  # the documented default page size
    full = client.batch_list_job_status(
        sdk.BatchListJobStatusRequest(
            body=sdk.BatchQueryJobReqPage(jobs=ids, page_req=sdk.PageReq(cur_page=1, per_page=100))
        )
    )
    assert full.count == 7 and {r.status for r in full.results} == {"INCRE_TRANSFER_STARTED"}

    detail = client.batch_list_job_details(
        sdk.BatchListJobDetailsRequest(body=sdk.BatchQueryJobReqPage(jobs=ids[:2]))
    )
    assert [d.id for d in detail.results] == ids[:2]
    assert detail.results[0].name == "sdk-0" and detail.results[0].create_time.isdigit()

    def batch(delete_type: str) -> list[Any]:
        body = sdk.BatchDeleteJobReq(jobs=[sdk.DeleteJobReq(delete_type=delete_type, job_id=i) for i in ids])
        resp = client.batch_delete_jobs(sdk.BatchDeleteJobsRequest(body=body))
        assert resp.count == len(ids)
        return list(resp.results)

    assert {r.status for r in batch("terminate")} == {"success"}
    for _ in range(50):  # poll, moving the simulated time instead of sleeping
        statuses = {
            r.status
            for r in client.batch_list_job_status(
                sdk.BatchListJobStatusRequest(
                    body=sdk.BatchQueryJobReqPage(jobs=ids, page_req=sdk.PageReq(per_page=0))
                )
            ).results
        }
        if statuses == {"RELEASE_RESOURCE_COMPLETE"}:
            break
        assert statuses <= {"RELEASE_RESOURCE_STARTED", "RELEASE_RESOURCE_COMPLETE"}
        clock.advance(0.05)
    assert statuses == {"RELEASE_RESOURCE_COMPLETE"}
    assert {r.status for r in batch("delete")} == {"success"}
    after = client.batch_list_job_details(
        sdk.BatchListJobDetailsRequest(
            body=sdk.BatchQueryJobReqPage(jobs=ids, page_req=sdk.PageReq(per_page=10))
        )
    )
    assert {d.status for d in after.results} == {"DELETED"}
    assert not sim.violations
    assert {r["auth"] for r in sim.requests} == {"aksk"}


def test_sdk_unknown_id_in_detail_raises_with_results_in_body(
    world: tuple[Simulator, str, ManualClock],
) -> None:
    sim, url, _ = world
    known = sim.add_job(JobSpec())
    with pytest.raises(ClientRequestException) as info:
        _client(url).batch_list_job_details(
            sdk.BatchListJobDetailsRequest(body=sdk.BatchQueryJobReqPage(jobs=[known, str(uuid.uuid4())]))
        )
    assert info.value.status_code == 400
    body = json.loads(info.value.error_msg)  # the SDK keeps the raw body when it has no error_code
    assert [r.get("error_code") for r in body["results"]] == ["", "DRS.M00289"]


def test_sdk_wrong_secret_key_is_401(world: tuple[Simulator, str, ManualClock]) -> None:
    sim, url, _ = world
    with pytest.raises(ClientRequestException) as info:
        _client(url, sk="wrong-secret").show_job_list(
            sdk.ShowJobListRequest(body=sdk.QueryJobsReq(db_use_type="sync"))
        )
    assert info.value.status_code == 401
    assert info.value.error_code == "APIGW.0301"
    assert info.value.request_id
    assert sim.violations == {"unauthenticated": 1}
