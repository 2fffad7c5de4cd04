"""X-Language on every call (validated), the service's message kept as it came, and structured INFO logs of each
exchange with secrets masked."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.drs.auth import TokenAuth
from orchestrator.drs.client import DrsClient
from orchestrator.errors import ConfigError, RequestRejected
from orchestrator.wire import StopRequest, issue_permit
from tests.drs.mock import BASE, JOB, PROJECT, Calls, error, jobs_ok, make_client, status_ok

TOKEN = "tok-secret-" + "z" * 24


def _any(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith("/batch-jobs"):
        return jobs_ok()
    if path.endswith("/batch-detail"):
        return httpx.Response(200, json={"count": 1, "results": [{"id": JOB, "status": "CONFIGURATION"}]})
    if path.endswith("/jobs"):
        return httpx.Response(200, json={"total_record": 0, "jobs": []})
    if "resources/query" in path:
        return httpx.Response(200, json={"total_count": 0, "data": []})
    if "unsubscribe" in path:
        return httpx.Response(200, json={"order_ids": ["o"]})
    return status_ok()


@pytest.mark.parametrize("language", ["en-us", "zh-cn", " ZH-CN "])
def test_the_language_reaches_every_call(language: str) -> None:
    clock = FakeClock()
    calls = Calls(clock, _any)
    client, _ = make_client(calls, clock, language=language)
    bss = client.bss("https://bss.example.test")

    async def every_call() -> None:
        await client.list_jobs("sync")
        await client.status_chunk([JOB])
        await client.batch_detail([JOB])
        await client.stop([StopRequest(JOB)])
        await client.delete([issue_permit(JOB, "RELEASE_RESOURCE_COMPLETE")])
        await bss.query_resources("order-1")
        await bss.unsubscribe(["res-1"])

    asyncio.run(every_call())
    assert len(calls.requests) == 7
    assert {r.headers["X-Language"] for r in calls.requests} == {language.strip().lower()}


@pytest.mark.parametrize("bad", ["fr-fr", "", "en_US", "zh"])
def test_an_unknown_language_is_a_config_error_listing_the_valid_ones(bad: str) -> None:
    with pytest.raises(ConfigError, match="en-us, zh-cn"):
        DrsClient(BASE, PROJECT, language=bad)


def test_the_service_message_is_kept_as_it_came() -> None:
    clock = FakeClock()
    calls = Calls(clock, error(400, "DRS.M00201", "jobs参数为空"))
    client, _ = make_client(calls, clock, language="zh-cn")
    with pytest.raises(RequestRejected) as info:
        asyncio.run(client.stop([StopRequest(JOB)]))
    assert info.value.message == "batch-jobs: HTTP 400 DRS.M00201 jobs参数为空"


def test_each_exchange_is_logged_at_info_with_structured_fields_and_no_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    calls = Calls(clock, error(503, "APIGW.0613"), status_ok())
    client, _ = make_client(calls, clock, auth=TokenAuth(TOKEN))
    with caplog.at_level(logging.INFO, logger="drs_teardown.http"):
        asyncio.run(client.status_chunk([JOB]))
    exchanges = [r for r in caplog.records if getattr(r, "event", None) == "http"]
    assert [(r.api, r.method, r.status, r.attempt) for r in exchanges] == [  # type: ignore[attr-defined]
        ("batch-status", "POST", 503, 1), ("batch-status", "POST", 200, 2)]
    last = exchanges[-1]
    assert last.path == f"/v3/{PROJECT}/jobs/batch-status" and last.request_id == "rid-ok"  # type: ignore[attr-defined]
    assert isinstance(last.duration_ms, float) and last.levelno == logging.INFO  # type: ignore[attr-defined]
    assert exchanges[0].error_code == "APIGW.0613"  # type: ignore[attr-defined]
    sent = [r for r in caplog.records if getattr(r, "event", None) == "http_request"]
    assert sent and all(r.headers["x-auth-token"] == "***" for r in sent)  # type: ignore[attr-defined]
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in repr(vars(record))
