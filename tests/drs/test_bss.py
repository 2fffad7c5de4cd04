"""The BSS client: the order query (a read, retried) and the unsubscribe (a billing action, sent at most once),
spelled and shaped as Terraform and huaweicloudsdkbss v2 have them; the endpoint by site or explicit URL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.drs.aksk import AkSkAuth
from orchestrator.drs.bss import ALREADY_UNSUBSCRIBED, QUERY_PATH, UNSUBSCRIBE_PATH
from orchestrator.drs.endpoints import BSS_ENDPOINTS, resolve_bss_endpoint
from orchestrator.drs.signing import canonical_request, signature, string_to_sign
from orchestrator.errors import ConfigError, OutcomeUnknown, RequestRejected
from tests.drs.mock import JOB, PROJECT, Calls, error, make_client

BSS = "https://bss.example.test"
ORDER = "CS2401011234ABCDE"


def _query(*ids: str, total: int | None = None) -> httpx.Response:
    return httpx.Response(200, json={"total_count": len(ids) if total is None else total,
                                     "data": [{"resource_id": i, "is_main_resource": 1, "status": 2} for i in ids]},
                          headers={"X-Request-Id": "rid-q"})


def test_query_resources_sends_the_order_and_reads_the_resource_ids() -> None:
    clock = FakeClock()
    calls = Calls(clock, httpx.Response(503), _query("res-1"))
    client, recorded = make_client(calls, clock)
    bss = client.bss(BSS)
    assert asyncio.run(bss.query_resources(ORDER, job_ids=[JOB])) == ["res-1"]
    request = calls.requests[-1]
    assert request.method == "POST" and str(request.url) == BSS + "/v2/orders/suscriptions/resources/query"
    assert QUERY_PATH == "/v2/orders/suscriptions/resources/query"  # sic: BSS spells it so
    assert json.loads(request.content) == {"order_id": ORDER, "only_main_resource": 1, "offset": 0, "limit": 100}
    assert [e.api for e in recorded] == ["bss-query", "bss-query"] and recorded[-1].job_ids == (JOB,)
    assert client.stats["retry:HTTP503"] == 1  # a read: retried


def test_query_pages_and_an_order_not_listed_yet_is_empty() -> None:
    clock = FakeClock()
    first = _query(*[f"r{i}" for i in range(100)], total=101)
    calls = Calls(clock, first, _query("r100", total=101))
    client, _ = make_client(calls, clock)
    assert len(asyncio.run(client.bss(BSS).query_resources(ORDER))) == 101
    assert [json.loads(r.content)["offset"] for r in calls.requests] == [0, 100]
    client, _ = make_client(Calls(clock, _query(total=0)), clock)
    assert asyncio.run(client.bss(BSS).query_resources(ORDER)) == []


def test_a_malformed_query_answer_is_retried() -> None:
    clock = FakeClock()
    calls = Calls(clock, httpx.Response(200, json={"data": [{"resource_id": "x"}]}), _query("res-1"))
    client, _ = make_client(calls, clock)
    assert asyncio.run(client.bss(BSS).query_resources(ORDER)) == ["res-1"] and len(calls.requests) == 2


def test_unsubscribe_sends_type_1_and_surfaces_each_refusal() -> None:
    clock = FakeClock()
    answer = {"order_ids": ["CS-refund-1"], "fail_resource_infos": [
        {"resource_id": "res-2", "error_code": "CBC.30000010", "error_msg": "资源不支持退订"}]}
    calls = Calls(clock, httpx.Response(200, json=answer, headers={"X-Request-Id": "rid-u"}))
    client, recorded = make_client(calls, clock)
    result = asyncio.run(client.bss(BSS).unsubscribe(["res-1", "res-2"], job_ids=[JOB]))
    request = calls.requests[0]
    assert str(request.url) == BSS + UNSUBSCRIBE_PATH == BSS + "/v2/orders/subscriptions/resources/unsubscribe"
    assert json.loads(request.content) == {"resource_ids": ["res-1", "res-2"], "unsubscribe_type": 1}
    assert result.order_ids == ("CS-refund-1",) and not result.ok and result.request_id == "rid-u"
    refusal = result.refused["res-2"]
    assert (refusal.error_code, refusal.error_msg) == ("CBC.30000010", "资源不支持退订")
    assert str(refusal) == "CBC.30000010 资源不支持退订"
    assert recorded[0].api == "bss-unsubscribe" and recorded[0].job_ids == (JOB,)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout(""), httpx.RemoteProtocolError(""), error(500, "CBC.0999")])
def test_unsubscribe_is_never_re_sent_once_it_may_have_left(failure: object) -> None:
    clock = FakeClock()
    calls = Calls(clock, failure, httpx.Response(200, json={"order_ids": []}))  # type: ignore[arg-type]
    client, _ = make_client(calls, clock)
    with pytest.raises(OutcomeUnknown):
        asyncio.run(client.bss(BSS).unsubscribe(["res-1"]))
    assert len(calls.requests) == 1


def test_unsubscribe_refused_as_a_whole_keeps_bss_code_and_message() -> None:
    clock = FakeClock()
    calls = Calls(clock, error(400, ALREADY_UNSUBSCRIBED, "The resource has been unsubscribed."))
    client, _ = make_client(calls, clock)
    with pytest.raises(RequestRejected) as info:
        asyncio.run(client.bss(BSS).unsubscribe(["res-1"]))
    assert info.value.code == "CBC.30000067" and "The resource has been unsubscribed." in info.value.message
    assert len(calls.requests) == 1


def test_bss_requests_are_signed_for_the_bss_host_and_carry_the_language() -> None:
    clock = FakeClock()
    sk = "bssSecretKey00000000000000000000000000000"
    calls = Calls(clock, _query("res-1"))
    auth = AkSkAuth("HPUAEXAMPLEAK0000000", sk, PROJECT)
    client, _ = make_client(calls, clock, auth=auth, language="zh-cn")
    asyncio.run(client.bss(BSS).query_resources(ORDER))
    request = calls.requests[0]
    assert request.headers["Host"] == "bss.example.test" and request.headers["X-Language"] == "zh-cn"
    parts = dict(p.split("=", 1) for p in request.headers["Authorization"].split(" ", 1)[1].split(", "))
    signed = parts["SignedHeaders"].split(";")
    assert "host" in signed and "x-language" in signed
    canonical = canonical_request("POST", request.url.path, [], dict(request.headers), signed, request.content)
    assert signature(sk, string_to_sign(canonical, request.headers["X-Sdk-Date"])) == parts["Signature"]


def test_bss_shares_the_client_budget_and_statistics() -> None:
    clock = FakeClock()
    calls = Calls(clock, _query("res-1"))
    client, _ = make_client(calls, clock)
    bss = client.bss(BSS)
    assert bss.budget is client.budget and bss.stats is client.stats
    client.deadline = clock.monotonic()
    with pytest.raises(Exception, match="time budget"):
        asyncio.run(bss.query_resources(ORDER))
    assert calls.requests == []


def test_the_bss_endpoint_by_site_or_explicit() -> None:
    assert resolve_bss_endpoint("cn", None) == "https://bss.myhuaweicloud.com" == BSS_ENDPOINTS["cn"]
    assert resolve_bss_endpoint("intl", None) == "https://bss-intl.myhuaweicloud.com"
    assert resolve_bss_endpoint("INTL ", None) == "https://bss-intl.myhuaweicloud.com"
    assert resolve_bss_endpoint("cn", " https://bss.example.test/\n") == "https://bss.example.test"
    with pytest.raises(ConfigError, match="bss-site"):
        resolve_bss_endpoint(None, None)
    with pytest.raises(ConfigError, match="cn, intl"):
        resolve_bss_endpoint("eu", None)
    with pytest.raises(ConfigError, match="DRS_TEARDOWN_BSS_ENDPOINT"):
        resolve_bss_endpoint(None, "http://bss.example.test")  # plain http off loopback
    assert resolve_bss_endpoint(None, "http://127.0.0.1:8080") == "http://127.0.0.1:8080"
