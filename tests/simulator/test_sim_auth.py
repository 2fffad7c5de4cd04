"""Gateway authentication: IAM tokens, X-Auth-Token, AK/SK (with the published §12 vectors over HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from orchestrator.drs import signing
from orchestrator.simulator import ManualClock

from .conftest import AK, IAM_USER, PROJECT, SK, SimFactory, add, raw

VECTOR_HOST = "drs.cn-north-4.myhuaweicloud.com"
VECTOR_HEADERS = {
    "Content-Type": "application/json",
    "X-Language": "en-us",
    "User-Agent": "huaweicloud-usdk-python/3.0",
    "X-Sdk-Date": "20240101T000000Z",
    "X-Project-Id": PROJECT,
    "Host": VECTOR_HOST,
}
SIGNED = "content-type;host;user-agent;x-language;x-project-id;x-sdk-date"


def signed_headers(
    url: str,
    method: str,
    path: str,
    body: bytes,
    *,
    when: datetime,
    ak: str = AK,
    sk: str = SK,
    query: list[tuple[str, str]] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Headers of an AK/SK request signed the SDK's way (every header without '_' is signed)."""
    headers = {
        "Content-Type": "application/json",
        "X-Sdk-Date": signing.sdk_date(when),
        "Host": httpx.URL(url).netloc.decode(),
        "X-Project-Id": PROJECT,
        **(extra or {}),
    }
    headers["Authorization"] = signing.sign(
        access_key=ak, secret_key=sk, method=method, path=path, query=query or [], headers=headers, body=body
    )
    return headers


def _send(
    url: str, method: str, path: str, body: bytes, headers: dict[str, str], query: str = ""
) -> httpx.Response:
    return raw.request(method, f"{url}{path}{query}", content=body, headers=headers)


# -- the published vectors ---------------------------------------------------------------------------------


def test_published_vectors_pass_the_gateway(make_sim: SimFactory) -> None:
    # The §12.2 vectors were signed at 2024-01-01T00:00:00Z for a fixed host: set the clock, send that Host.
    sim, api = make_sim(clock=ManualClock(datetime(2024, 1, 1, 0, 5, tzinfo=UTC)))
    cases = [
        (
            "POST",
            "batch-status",
            b'{"jobs": ["9a470239-2308-4bb5-a6bc-1040402fjb21"], '
            b'"page_req": {"cur_page": 1, "per_page": 10}}',
            "53cda18ace3f84a0e516ba5e9c413c20faac1a89ce6af77114f24434f0ac4d49",
        ),
        (
            "DELETE",
            "batch-jobs",
            b'{"jobs": [{"delete_type": "terminate", "job_id": "9a470239-2308-4bb5-a6bc-1040402fjb21"}]}',
            "8df045e9788c0869c935ac55d1f4f81637faf91e1985e2c5b5d1f6f99fcaea0a",
        ),
    ]
    for method, api_name, body, sig in cases:
        headers = dict(VECTOR_HEADERS)
        headers["Authorization"] = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={SIGNED}, Signature={sig}"
        r = _send(api.url, method, f"/v3/{PROJECT}/jobs/{api_name}", body, headers)
        # Past the gateway: the docs' placeholder id has the documented shape (its last group is alphanumeric),
        # but no such task exists, so its item carries DRS.M00289.
        assert r.status_code in (200, 202), r.text
        assert r.json()["results"][0]["error_code"] == "DRS.M00289"
        assert sim.requests[-1]["auth"] == "aksk"
        tampered = dict(headers, Authorization=headers["Authorization"][:-1] + "0")
        assert _send(api.url, method, f"/v3/{PROJECT}/jobs/{api_name}", body, tampered).status_code == 401
    assert sim.violations == {"unknown_job_action": 1, "unauthenticated": 2}


# -- AK/SK --------------------------------------------------------------------------------------------------


@pytest.fixture
def signed_env(make_sim: SimFactory) -> tuple[Any, str, ManualClock]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    sim, api = make_sim(clock=clock)
    return sim, api.url, clock


def test_aksk_signed_request_is_accepted(signed_env) -> None:  # type: ignore[no-untyped-def]
    sim, url, clock = signed_env
    job = add(sim)
    path = f"/v3/{PROJECT}/jobs/batch-status"
    body = json.dumps({"jobs": [job], "page_req": {"cur_page": 1, "per_page": 10}}).encode()
    r = _send(url, "POST", path, body, signed_headers(url, "POST", path, body, when=clock.now()))
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"id": job, "status": "INCRE_TRANSFER_STARTED"}]
    assert sim.requests[-1]["auth"] == "aksk" and sim.requests[-1]["identity"] == AK


def test_aksk_signed_query_is_verified(signed_env) -> None:  # type: ignore[no-untyped-def]
    _, url, clock = signed_env
    path = f"/v3/{PROJECT}/jobs"
    body = b'{"db_use_type": "sync"}'
    query = [("name", "a b/c"), ("limit", "10")]
    headers = signed_headers(url, "POST", path, body, when=clock.now(), query=query)
    assert _send(url, "POST", path, body, headers, "?limit=10&name=a%20b%2Fc").status_code == 200
    assert _send(url, "POST", path, body, headers, "?limit=11&name=a%20b%2Fc").status_code == 401


@pytest.mark.parametrize(
    "tamper", ["body", "header", "date_skew", "unknown_ak", "wrong_sk", "no_host_signed", "garbage", "path"]
)
def test_aksk_tampering_is_refused(signed_env, tamper: str) -> None:  # type: ignore[no-untyped-def]
    sim, url, clock = signed_env
    job = add(sim)
    path = f"/v3/{PROJECT}/jobs/batch-status"
    body = json.dumps({"jobs": [job]}).encode()
    when = clock.now()
    headers = signed_headers(url, "POST", path, body, when=when, extra={"X-Language": "en-us"})
    send_path = path
    if tamper == "body":
        body = body.replace(b'"]', b'" ]')
    elif tamper == "header":
        headers["X-Language"] = "EN-US"  # the same language, another signed value
    elif tamper == "date_skew":
        headers = signed_headers(url, "POST", path, body, when=when - timedelta(minutes=15, seconds=1))
    elif tamper == "unknown_ak":
        headers = signed_headers(url, "POST", path, body, when=when, ak="OTHERAK", sk=SK)
    elif tamper == "wrong_sk":
        headers = signed_headers(url, "POST", path, body, when=when, sk="not-the-secret")
    elif tamper == "no_host_signed":
        unsigned = {k: v for k, v in headers.items() if k not in ("Host", "Authorization")}
        auth = signing.sign(
            access_key=AK, secret_key=SK, method="POST", path=path, query=[], headers=unsigned, body=body
        )
        headers = dict(unsigned, Authorization=auth)
    elif tamper == "garbage":
        headers["Authorization"] = "SDK-HMAC-SHA256 nonsense"
    elif tamper == "path":
        send_path = f"/v3/{PROJECT}/jobs/batch-detail"
    r = _send(url, "POST", send_path, body, headers)
    assert r.status_code == 401, r.text
    err = r.json()
    assert err["error_code"] == "APIGW.0301"
    assert err["error_msg"] == "Incorrect IAM authentication information: verify aksk signature fail"
    assert err["request_id"] == r.headers["x-request-id"]
    assert sim.violations == {"unauthenticated": 1}


def test_aksk_date_skew_within_fifteen_minutes_passes(signed_env) -> None:  # type: ignore[no-untyped-def]
    _, url, clock = signed_env
    path = f"/v3/{PROJECT}/jobs"
    body = b'{"db_use_type": "sync"}'
    for delta in (timedelta(minutes=14), timedelta(minutes=-14)):
        headers = signed_headers(url, "POST", path, body, when=clock.now() + delta)
        assert _send(url, "POST", path, body, headers).status_code == 200


def test_security_token_when_configured(make_sim: SimFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    _, api = make_sim(clock=clock, security_tokens={AK: "sts-token"})
    url, path, body = api.url, f"/v3/{PROJECT}/jobs", b'{"db_use_type": "sync"}'
    assert (
        _send(url, "POST", path, body, signed_headers(url, "POST", path, body, when=clock.now())).status_code
        == 401
    )
    headers = signed_headers(
        url, "POST", path, body, when=clock.now(), extra={"X-Security-Token": "sts-token"}
    )
    assert _send(url, "POST", path, body, headers).status_code == 200
    headers = signed_headers(url, "POST", path, body, when=clock.now(), extra={"X-Security-Token": "other"})
    assert _send(url, "POST", path, body, headers).status_code == 401


def test_aksk_project_mismatch_is_403(signed_env) -> None:  # type: ignore[no-untyped-def]
    _, url, clock = signed_env
    other = "f" * 32
    path = f"/v3/{other}/jobs"
    body = b'{"db_use_type": "sync"}'
    r = _send(url, "POST", path, body, signed_headers(url, "POST", path, body, when=clock.now()))
    assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")


# -- tokens -------------------------------------------------------------------------------------------------


def _token_body(
    user: str = IAM_USER[0], password: str = IAM_USER[1], scope: dict[str, Any] | None = None
) -> Any:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": {"name": IAM_USER[2]}}},
            }
        }
    }
    body["auth"]["scope"] = scope if scope is not None else {"project": {"name": "cn-north-4"}}
    return body


def test_missing_and_bad_tokens(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    path = f"{api.url}/v3/{PROJECT}/jobs"
    r = raw.post(path, json={"db_use_type": "sync"})
    assert r.status_code == 401
    assert r.json()["error_code"] == "APIGW.0301"
    assert r.json()["error_msg"] == "Incorrect IAM authentication information: x-auth-token not found"
    r = raw.post(path, json={"db_use_type": "sync"}, headers={"X-Auth-Token": "MIIforged"})
    assert (r.status_code, r.json()["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: decrypt token fail",
    )
    assert sim.violations == {"unauthenticated": 2}


def test_iam_token_issue_and_use(make_sim: SimFactory, clock: ManualClock) -> None:
    _, api = make_sim()
    r = raw.post(
        f"{api.url}/v3/auth/tokens?nocatalog=true",
        json=_token_body(),
        headers={"Content-Type": "application/json;charset=utf8"},
    )
    assert r.status_code == 201, r.text
    token = r.headers["X-Subject-Token"]
    assert token.startswith("MII")
    body = r.json()["token"]
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert expires - issued == timedelta(hours=24)
    assert body["methods"] == ["password"] and body["project"]["id"] == PROJECT
    assert body["user"]["name"] == IAM_USER[0]
    r = raw.post(
        f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers={"X-Auth-Token": token}
    )
    assert r.status_code == 200
    by_id = _token_body(scope={"project": {"id": PROJECT}})
    assert raw.post(f"{api.url}/v3/auth/tokens", json=by_id).status_code == 201
    clock.advance(24 * 3600)
    r = raw.post(
        f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers={"X-Auth-Token": token}
    )
    assert (r.status_code, r.json()["error_code"]) == (401, "APIGW.0307")


def test_iam_wrong_password_is_keystone_401(make_sim: SimFactory) -> None:
    _, api = make_sim()
    r = raw.post(f"{api.url}/v3/auth/tokens", json=_token_body(password="wrong"))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401 and r.json()["error"]["title"] == "Unauthorized"
    assert "X-Subject-Token" not in r.headers
    r = raw.post(f"{api.url}/v3/auth/tokens", json=_token_body(scope={"project": {"name": "eu-west-0"}}))
    assert r.status_code == 401


def test_token_ttl_option_expires_early(make_sim: SimFactory, clock: ManualClock) -> None:
    _, api = make_sim(token_ttl_seconds=30)
    token = raw.post(f"{api.url}/v3/auth/tokens", json=_token_body()).headers["X-Subject-Token"]
    h = {"X-Auth-Token": token}
    assert (
        raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=h).status_code == 200
    )
    clock.advance(30)
    assert (
        raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=h).status_code == 401
    )


def test_domain_scoped_token_is_forbidden_on_a_project(make_sim: SimFactory) -> None:
    _, api = make_sim()
    r = raw.post(f"{api.url}/v3/auth/tokens", json=_token_body(scope={}))
    assert "domain" in r.json()["token"]
    h = {"X-Auth-Token": r.headers["X-Subject-Token"]}
    r = raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=h)
    assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")


def test_expire_tokens_in_process_and_over_http(make_sim: SimFactory) -> None:
    sim, api = make_sim()
    assert api.list(db_use_type="sync").status_code == 200
    sim.expire_tokens()
    r = api.list(db_use_type="sync")
    assert (r.status_code, r.json()["error_code"]) == (401, "APIGW.0307")
    assert r.json()["error_msg"] == "The token must be updated."
    token = raw.post(f"{api.url}/v3/auth/tokens", json=_token_body()).headers["X-Subject-Token"]
    h = {"X-Auth-Token": token}
    assert (
        raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=h).status_code == 200
    )
    assert raw.post(f"{api.url}/_sim/expire-tokens").status_code == 200
    assert (
        raw.post(f"{api.url}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=h).status_code == 401
    )


def test_path_project_mismatch_is_403(make_sim: SimFactory) -> None:
    _, api = make_sim()
    r = api.http.post(f"/v3/{'a' * 32}/jobs", json={"db_use_type": "sync"})
    assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")
    assert r.json()["error_msg"] == "Invalid project ID."


def test_content_type_must_be_json(make_sim: SimFactory) -> None:
    _, api = make_sim()
    r = api.http.post(
        f"/v3/{PROJECT}/jobs", content=b'{"db_use_type": "sync"}', headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    r = api.http.post(
        f"/v3/{PROJECT}/jobs",
        content=b'{"db_use_type": "sync"}',
        headers={"Content-Type": "application/json;charset=UTF-8"},
    )
    assert r.status_code == 200
