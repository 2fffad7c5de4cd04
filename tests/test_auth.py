"""Credentials as httpx.Auth: token, IAM password (fetch, cache, renew, APIGW.0307 retry), AK/SK signing.

Unit tests run on httpx.MockTransport; the loopback tests at the end run against the real simulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest

from orchestrator.drs import signing
from orchestrator.drs.auth import (
    UNSIGNED_HEADERS,
    AkSkAuth,
    DrsAuth,
    IamPasswordAuth,
    TokenAuth,
    resolve_credentials,
    token_identity,
)
from orchestrator.errors import AuthError, ConfigError, CredentialError
from orchestrator.secrets import SecretRedactingFilter, collect_secrets
from orchestrator.simulator import ManualClock, Simulator, load_profile

PROJECT = "0123456789abcdef0123456789abcdef"
JOB = "9a470239-2308-4bb5-a6bc-1040402fjb21"
DRS = "https://drs.cn-north-4.myhuaweicloud.com"
IAM = "https://iam.cn-north-4.myhuaweicloud.com"
STATUS_PATH = f"/v3/{PROJECT}/jobs/batch-status"
STATUS_BODY = (b'{"jobs": ["9a470239-2308-4bb5-a6bc-1040402fjb21"], '
               b'"page_req": {"cur_page": 1, "per_page": 10}}')
USER, PASSWORD, DOMAIN = "alice", "Hunter2-distinctive-pw", "acme"
AK = "HPUAEXAMPLEAK0000000"
SK = "exampleSecretKey0000000000000000000000000"
SDK_HEADERS = {"Content-Type": "application/json", "X-Language": "en-us",
               "User-Agent": "huaweicloud-usdk-python/3.0"}
T0 = datetime(2024, 1, 1, tzinfo=UTC)
EXPIRED = {"error_code": "APIGW.0307", "error_msg": "The token must be updated."}


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeIam:
    """A MockTransport handler: IAM issues numbered tokens; the DRS call wants a current one (else 0307)."""

    def __init__(self, clock: FakeClock, ttl: timedelta = timedelta(hours=24)) -> None:
        self.clock = clock
        self.ttl = ttl
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []
        # The token each API call carried: a retry re-sends the same Request object with a new header.
        self.api_tokens: list[str | None] = []
        self.valid: set[str] = set()
        self.iam_reply: httpx.Response | None = None
        self.reject_everything = False
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if request.url.path == "/v3/auth/tokens":
                return self._issue(request)
            self.api_requests.append(request)
            token = request.headers.get("X-Auth-Token")
            self.api_tokens.append(token)
            if token in self.valid and not self.reject_everything:
                return httpx.Response(200, json={"count": 0, "results": []})
            return httpx.Response(401, json=EXPIRED)

    def _issue(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self.iam_reply is not None:
            return self.iam_reply
        token = f"MIItoken-{len(self.token_requests)}-" + "x" * 40
        self.valid.add(token)
        body = {"token": {"expires_at": _iso(self.clock() + self.ttl), "methods": ["password"]}}
        return httpx.Response(201, headers={"X-Subject-Token": token}, json=body)

    def expire_all(self) -> None:
        self.valid.clear()


def _iam_auth(clock: FakeClock, **kw: object) -> IamPasswordAuth:
    return IamPasswordAuth(USER, PASSWORD, DOMAIN, project_id=PROJECT, iam_endpoint=IAM, clock=clock,
                           **kw)  # type: ignore[arg-type]


def _client(auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(base_url=DRS, auth=auth, transport=httpx.MockTransport(handler), headers=SDK_HEADERS)


def _async_client(auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=DRS, auth=auth, transport=httpx.MockTransport(handler),
                             headers=SDK_HEADERS)


def _status(client: httpx.Client) -> httpx.Response:
    return client.post(STATUS_PATH, content=STATUS_BODY)


# -- token ---------------------------------------------------------------------------------------------------


def test_token_auth_sets_x_auth_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    auth = TokenAuth(" MIItoken-given\n")
    assert _status(_client(auth, handler)).status_code == 200
    assert seen[0].headers["X-Auth-Token"] == "MIItoken-given"
    assert "Authorization" not in seen[0].headers


def test_token_identity_is_a_short_fingerprint() -> None:
    auth = TokenAuth("MIItoken-given")
    fingerprint = hashlib.sha256(b"MIItoken-given").hexdigest()[:8]
    assert auth.identity == token_identity("MIItoken-given") == f"iam-token:{fingerprint}"
    assert auth.kind == "token"
    assert "MIItoken-given" not in repr(auth)


@pytest.mark.parametrize("bad", ["", "   ", "MIIa\nb", "MIIa\x00b"])
def test_token_auth_refuses_empty_or_control_characters_without_echoing(bad: str) -> None:
    with pytest.raises(CredentialError) as info:
        TokenAuth(bad)
    assert bad.strip() == "" or bad not in str(info.value)


# -- IAM password: fetching and caching ----------------------------------------------------------------------


def test_iam_fetches_a_project_scoped_token_once_and_reuses_it() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    client = _client(_iam_auth(clock), iam)
    assert _status(client).status_code == 200
    assert _status(client).status_code == 200
    assert len(iam.token_requests) == 1
    token_request = iam.token_requests[0]
    assert token_request.method == "POST"
    assert str(token_request.url) == f"{IAM}/v3/auth/tokens?nocatalog=true"
    assert token_request.headers["Content-Type"] == "application/json;charset=utf8"
    assert "X-Auth-Token" not in token_request.headers
    assert json.loads(token_request.content) == {"auth": {
        "identity": {"methods": ["password"],
                     "password": {"user": {"name": USER, "password": PASSWORD, "domain": {"name": DOMAIN}}}},
        "scope": {"project": {"id": PROJECT}},
    }}
    assert set(iam.api_tokens) == iam.valid and len(iam.valid) == 1


def test_iam_scopes_by_region_name_without_a_project_id() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    auth = IamPasswordAuth(USER, PASSWORD, DOMAIN, project_name="cn-north-4", iam_endpoint=IAM, clock=clock)
    _status(_client(auth, iam))
    assert json.loads(iam.token_requests[0].content)["auth"]["scope"] == {"project": {"name": "cn-north-4"}}


def test_iam_needs_a_scope_and_complete_credentials() -> None:
    with pytest.raises(CredentialError, match="scope"):
        IamPasswordAuth(USER, PASSWORD, DOMAIN, iam_endpoint=IAM)
    with pytest.raises(CredentialError, match="user, a password and a domain"):
        IamPasswordAuth(USER, "", DOMAIN, project_id=PROJECT)


def test_iam_token_request_carries_the_client_timeout() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    client = httpx.Client(base_url=DRS, auth=_iam_auth(clock), transport=httpx.MockTransport(iam),
                          timeout=httpx.Timeout(3.5))
    _status(client)
    assert iam.token_requests[0].extensions["timeout"] == httpx.Timeout(3.5).as_dict()


def test_iam_identity_and_repr_hide_the_password() -> None:
    auth = _iam_auth(FakeClock())
    assert auth.identity == f"iam-user:{DOMAIN}/{USER}"
    assert auth.kind == "iam-password"
    assert PASSWORD not in repr(auth)
    assert isinstance(auth, DrsAuth)


def test_iam_reports_each_new_token() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    seen: list[str] = []
    _status(_client(_iam_auth(clock, on_token=seen.append), iam))
    assert seen == sorted(iam.valid)


# -- IAM password: renewal -----------------------------------------------------------------------------------


def test_iam_renews_before_expiry_minus_margin() -> None:
    clock = FakeClock()
    iam = FakeIam(clock, ttl=timedelta(hours=24))
    client = _client(_iam_auth(clock, refresh_margin=timedelta(minutes=5)), iam)
    _status(client)
    clock.advance(hours=23, minutes=54, seconds=59)
    _status(client)
    assert len(iam.token_requests) == 1
    clock.advance(seconds=2)  # now inside the 5-minute margin
    _status(client)
    assert len(iam.token_requests) == 2
    assert iam.api_tokens[0] == iam.api_tokens[1] != iam.api_tokens[2]
    # Renewal is proactive: the gateway never had to refuse a token.
    assert [token in iam.valid for token in iam.api_tokens] == [True, True, True]


def test_short_lived_token_is_renewed_at_half_life_not_on_every_call() -> None:
    clock = FakeClock()
    iam = FakeIam(clock, ttl=timedelta(minutes=2))
    client = _client(_iam_auth(clock, refresh_margin=timedelta(minutes=5)), iam)
    _status(client)
    clock.advance(seconds=59)
    _status(client)
    assert len(iam.token_requests) == 1
    clock.advance(seconds=1)
    _status(client)
    assert len(iam.token_requests) == 2


def test_missing_expires_at_falls_back_to_a_conservative_lifetime() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.iam_reply = httpx.Response(201, headers={"X-Subject-Token": "MIIno-expiry"}, content=b"not json")
    iam.valid.add("MIIno-expiry")
    client = _client(_iam_auth(clock), iam)
    _status(client)
    clock.advance(minutes=54)  # one hour, less the 5-minute margin
    _status(client)
    assert len(iam.token_requests) == 1
    clock.advance(minutes=2)
    _status(client)
    assert len(iam.token_requests) == 2


def test_apigw_0307_triggers_exactly_one_refresh_and_one_retry() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    client = _client(_iam_auth(clock), iam)
    _status(client)
    iam.expire_all()  # the gateway stops accepting the token early (e.g. the password changed)
    response = _status(client)
    assert response.status_code == 200
    assert len(iam.token_requests) == 2
    assert len(iam.api_requests) == 3
    assert iam.api_requests[-1].content == STATUS_BODY
    assert iam.api_tokens[0] == iam.api_tokens[1] != iam.api_tokens[2]


def test_no_loop_when_the_renewed_token_is_refused_too() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.reject_everything = True
    response = _status(_client(_iam_auth(clock), iam))
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIGW.0307"
    assert len(iam.token_requests) == 2
    assert len(iam.api_requests) == 2


@pytest.mark.parametrize("body", [
    {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information: decrypt token fail"},
    {"error_code": "DRS.M00103", "error_msg": "You do not have operation permissions."},
    "not json",
])
def test_other_401s_are_returned_without_a_refresh(body: object) -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/auth/tokens":
            return iam(request)
        iam.api_requests.append(request)
        return httpx.Response(401, content=content)

    assert _status(_client(_iam_auth(clock), handler)).status_code == 401
    assert len(iam.token_requests) == 1
    assert len(iam.api_requests) == 1


# -- IAM password: errors ------------------------------------------------------------------------------------


def test_wrong_password_raises_auth_error_naming_user_and_endpoint_not_the_password() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    # Even if IAM quoted the password back, it must not reach the message.
    iam.iam_reply = httpx.Response(401, headers={"X-Request-Id": "req-42"}, json={"error": {
        "code": 401, "title": "Unauthorized", "message": f"The username or password is wrong ({PASSWORD})."}})
    with pytest.raises(AuthError) as info:
        _status(_client(_iam_auth(clock), iam))
    error = info.value
    message = str(error)
    assert PASSWORD not in message
    assert USER in message and DOMAIN in message and IAM in message
    assert "HTTP 401" in message and "The username or password is wrong" in message
    assert (error.status_code, error.request_id, error.retryable) == (401, "req-42", False)
    assert (error.user, error.endpoint) == (USER, IAM)
    assert isinstance(error, CredentialError) and isinstance(error, ConfigError)
    assert not iam.api_requests


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (403, False),
                                                   (400, False)])
def test_iam_error_statuses(status: int, retryable: bool) -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.iam_reply = httpx.Response(status, json={"error_code": "APIGW.0613",
                                                 "error_msg": "The IAM service is currently unavailable."})
    with pytest.raises(AuthError, match=f"HTTP {status}") as info:
        _status(_client(_iam_auth(clock), iam))
    assert info.value.retryable is retryable


def test_iam_answer_without_subject_token_is_an_auth_error() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.iam_reply = httpx.Response(201, json={"token": {"expires_at": _iso(T0 + timedelta(hours=1))}})
    with pytest.raises(AuthError, match="without an X-Subject-Token"):
        _status(_client(_iam_auth(clock), iam))


def test_unreachable_iam_is_translated_by_auth_error_for() -> None:
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    auth = _iam_auth(clock)
    # httpx raises transport errors outside the auth flow; auth_error_for is the boundary translation.
    with pytest.raises(httpx.ConnectError) as info:
        _status(_client(auth, handler))
    error = auth.auth_error_for(info.value)
    assert error is not None and error.retryable
    assert IAM in str(error) and USER in str(error) and "ConnectError" in str(error)
    assert PASSWORD not in str(error)
    other = httpx.ConnectError("refused", request=httpx.Request("POST", DRS + STATUS_PATH))
    assert auth.auth_error_for(other) is None
    assert auth.auth_error_for(httpx.ConnectError("no request")) is None
    assert TokenAuth("MIIx").auth_error_for(other) is None


def test_a_failed_token_fetch_releases_the_lock() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.iam_reply = httpx.Response(503)
    client = _client(_iam_auth(clock), iam)
    with pytest.raises(AuthError):
        _status(client)
    iam.iam_reply = None
    assert _status(client).status_code == 200


def test_threads_share_one_token_fetch() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    client = _client(_iam_auth(clock), iam)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(_status(client).status_code)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert len(iam.token_requests) == 1


def test_concurrent_refusals_of_one_token_share_one_renewal() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    client = _client(_iam_auth(clock), iam)
    _status(client)
    iam.expire_all()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(_status(client).status_code)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert len(iam.token_requests) == 2


# -- IAM password: AsyncClient ------------------------------------------------------------------------------


def test_async_iam_fetch_cache_and_0307_retry() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)

    async def main() -> list[int]:
        async with _async_client(_iam_auth(clock), iam) as client:
            codes = [(await client.post(STATUS_PATH, content=STATUS_BODY)).status_code for _ in range(2)]
            iam.expire_all()
            codes.append((await client.post(STATUS_PATH, content=STATUS_BODY)).status_code)
            return codes

    assert asyncio.run(main()) == [200, 200, 200]
    assert len(iam.token_requests) == 2
    assert len(iam.api_requests) == 4


def test_async_no_loop_and_one_fetch_under_concurrency() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)

    async def main() -> list[int]:
        async with _async_client(_iam_auth(clock), iam) as client:
            responses = await asyncio.gather(*(client.post(STATUS_PATH, content=STATUS_BODY)
                                               for _ in range(10)))
            return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 10
    assert len(iam.token_requests) == 1
    iam.reject_everything = True
    iam.token_requests.clear()
    assert asyncio.run(main()) == [401] * 10
    # One initial fetch, then at most one renewal per request (renewals of the same stale token are shared).
    assert 2 <= len(iam.token_requests) <= 1 + 10
    assert len(iam.api_requests) == 10 * 2 + 10


def test_async_concurrent_refusals_share_one_renewal() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)

    async def main() -> list[int]:
        async with _async_client(_iam_auth(clock), iam) as client:
            await client.post(STATUS_PATH, content=STATUS_BODY)
            iam.expire_all()
            responses = await asyncio.gather(*(client.post(STATUS_PATH, content=STATUS_BODY)
                                               for _ in range(10)))
            return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 10
    assert len(iam.token_requests) == 2


def test_async_wrong_password_raises_auth_error() -> None:
    clock = FakeClock()
    iam = FakeIam(clock)
    iam.iam_reply = httpx.Response(401, json={"error": {"code": 401, "message": "wrong",
                                                        "title": "Unauthorized"}})

    async def main() -> None:
        async with _async_client(_iam_auth(clock), iam) as client:
            await client.post(STATUS_PATH, content=STATUS_BODY)

    with pytest.raises(AuthError) as info:
        asyncio.run(main())
    assert PASSWORD not in str(info.value)


# -- AK/SK ---------------------------------------------------------------------------------------------------


def _aksk(security_token: str | None = None, clock: Callable[[], datetime] = lambda: T0) -> AkSkAuth:
    return AkSkAuth(AK, SK, PROJECT, security_token, clock=clock)


def _signed(auth: AkSkAuth, method: str, url: str, **kw: object) -> httpx.Request:
    """Build the request the way httpx.Client does (default headers included), then sign it."""
    with httpx.Client(headers=SDK_HEADERS) as client:
        request = client.build_request(method, url, **kw)  # type: ignore[arg-type]
    return auth.sign(request)


@pytest.mark.parametrize(("method", "path", "body", "params", "expected"), [
    ("POST", STATUS_PATH, STATUS_BODY, None,
     "53cda18ace3f84a0e516ba5e9c413c20faac1a89ce6af77114f24434f0ac4d49"),
    ("DELETE", f"/v3/{PROJECT}/jobs/batch-jobs",
     b'{"jobs": [{"delete_type": "terminate", "job_id": "9a470239-2308-4bb5-a6bc-1040402fjb21"}]}', None,
     "8df045e9788c0869c935ac55d1f4f81637faf91e1985e2c5b5d1f6f99fcaea0a"),
    ("GET", f"/v5/{PROJECT}/jobs", None, [("limit", 10), ("offset", 0), ("name", "a b/c")],
     "b9b0dc1b7cfa95267e4d5084413abf4fdd157b495d5ec8e84886d0a33751414d"),
])
def test_section_12_2_vectors_through_httpx_requests(method: str, path: str, body: bytes | None,
                                                     params: list[tuple[str, int | str]] | None,
                                                     expected: str) -> None:
    request = _signed(_aksk(), method, DRS + path, content=body, params=params)
    assert request.headers["Authorization"] == (
        f"SDK-HMAC-SHA256 Access={AK}, "
        f"SignedHeaders=content-type;host;user-agent;x-language;x-project-id;x-sdk-date, Signature={expected}"
    )
    assert request.headers["X-Sdk-Date"] == "20240101T000000Z"
    assert request.headers["X-Project-Id"] == PROJECT
    # httpx's own headers are still sent, just not signed.
    assert {"accept", "accept-encoding", "connection"} <= set(request.headers.keys())


def test_query_is_sent_exactly_as_signed() -> None:
    params = {"offset": 0, "name": "a b/c", "limit": 10}
    request = _signed(_aksk(), "GET", f"{DRS}/v5/{PROJECT}/jobs", params=params)
    assert request.url.query == b"limit=10&name=a%20b%2Fc&offset=0"
    assert request.url.params["name"] == "a b/c"


def test_section_12_1_published_vector_with_a_bare_request() -> None:
    auth = AkSkAuth("QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc", PROJECT,
                    clock=lambda: datetime(2019, 11, 15, 3, 36, 55, tzinfo=UTC))
    request = httpx.Request(
        "GET", "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        params={"limit": "2", "marker": "13551d6b-755d-4757-b956-536f674975c0"},
    )
    auth.sign(request)
    # AkSkAuth also signs X-Project-Id (as the SDK's BasicCredentials does), which the guide's request lacks;
    # re-sign the guide's three headers as they were sent to show path, query, date and host agree with it.
    guide_headers = {name: request.headers[name] for name in ("Content-Type", "Host", "X-Sdk-Date")}
    authorization = signing.sign(
        access_key="QTWAOYTTINDUT2QVKYUC", secret_key="MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        method=request.method, path=request.url.path, query=request.url.params.multi_items(),
        headers=guide_headers, body=request.content,
    )
    assert authorization.endswith(
        "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe")
    assert request.url.query == b"limit=2&marker=13551d6b-755d-4757-b956-536f674975c0"


def _verify(request: httpx.Request, secret_key: str = SK) -> bool:
    """Verify like the gateway: over the headers named in SignedHeaders, as they were sent."""
    parsed = signing.parse_authorization(request.headers["Authorization"])
    assert parsed is not None
    raw_path, _, raw_query = request.url.raw_path.decode().partition("?")
    headers = {h: request.headers[h] for h in parsed.signed_headers}
    canonical = signing.canonical_request(request.method, raw_path, parse_qsl(raw_query), headers,
                                          parsed.signed_headers, request.content)
    to_sign = signing.string_to_sign(canonical, request.headers["X-Sdk-Date"])
    return signing.signature(secret_key, to_sign) == parsed.signature


def test_what_reaches_the_transport_verifies_and_signs_no_stack_owned_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = httpx.Client(base_url="http://127.0.0.1:8443", auth=_aksk("st-temporary-token"),
                          transport=httpx.MockTransport(handler), cookies={"lb": "sticky"})
    client.post(STATUS_PATH, json={"jobs": [JOB]}, headers={"X-Custom_Underscore": "u", "X-Request-Tag": "t"})
    request = seen[0]
    assert _verify(request)
    assert not _verify(request, secret_key=SK + "x")
    parsed = signing.parse_authorization(request.headers["Authorization"])
    assert parsed is not None
    assert parsed.signed_headers == ["content-type", "host", "user-agent", "x-project-id", "x-request-tag",
                                     "x-sdk-date", "x-security-token"]
    assert not set(parsed.signed_headers) & UNSIGNED_HEADERS
    assert request.headers["Host"] == "127.0.0.1:8443"
    assert request.headers["X-Security-Token"] == "st-temporary-token"
    assert request.headers["Cookie"] == "lb=sticky"
    assert request.headers["Content-Length"] == str(len(request.content))


def test_content_type_defaults_to_json_and_host_keeps_a_non_default_port() -> None:
    url = f"https://drs.example.test:8443/v3/{PROJECT}/jobs/batch-jobs"
    request = httpx.Request("DELETE", url, content=b"{}")
    _aksk().sign(request)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == "drs.example.test:8443"
    assert _verify(request)


def test_a_re_sent_request_is_re_signed_with_a_fresh_date() -> None:
    clock = FakeClock()
    auth = _aksk(clock=clock)
    request = _signed(auth, "POST", DRS + STATUS_PATH, content=STATUS_BODY)
    first = request.headers["Authorization"]
    clock.advance(minutes=20)
    auth.sign(request)
    assert request.headers["X-Sdk-Date"] == "20240101T002000Z"
    assert request.headers["Authorization"] != first
    assert request.headers.get_list("Authorization") == [request.headers["Authorization"]]
    assert _verify(request)


def test_percent_encoded_path_is_signed_as_sent() -> None:
    request = _signed(_aksk(), "GET", f"{DRS}/v3/{PROJECT}/jobs/a%2541b")
    assert request.url.raw_path == f"/v3/{PROJECT}/jobs/a%2541b".encode()
    assert _verify(request)


def test_streamed_body_is_read_before_signing() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    def chunks() -> Iterator[bytes]:
        yield STATUS_BODY[:10]
        yield STATUS_BODY[10:]

    client = httpx.Client(transport=httpx.MockTransport(handler), auth=_aksk())
    client.post(DRS + STATUS_PATH, content=chunks())
    assert seen[0].content == STATUS_BODY
    assert _verify(seen[0])


def test_aksk_identity_masks_all_but_four_characters() -> None:
    auth = _aksk("st")
    assert auth.identity == "aksk:HPUA" + "*" * 16
    assert auth.kind == "aksk"
    assert SK not in repr(auth) and AK not in repr(auth)


@pytest.mark.parametrize(("args", "match"), [
    (("", SK, PROJECT), "access key"),
    ((AK, "  ", PROJECT), "secret key"),
    ((AK, SK, ""), "project id"),
    ((AK + "\n", SK, PROJECT), None),
])
def test_aksk_refuses_bad_values_without_echoing(args: tuple[str, str, str], match: str | None) -> None:
    if match is None:
        assert AkSkAuth(*args).identity.startswith("aksk:HPUA")  # surrounding whitespace is stripped
        return
    with pytest.raises(CredentialError, match=match) as info:
        AkSkAuth(*args)
    assert SK not in str(info.value)


def test_async_client_signs_too() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def main() -> int:
        async with _async_client(_aksk(), handler) as client:
            return (await client.post(STATUS_PATH, content=STATUS_BODY)).status_code

    assert asyncio.run(main()) == 200
    assert seen[0].headers["Authorization"].endswith(
        "Signature=53cda18ace3f84a0e516ba5e9c413c20faac1a89ce6af77114f24434f0ac4d49")


# -- resolve_credentials -------------------------------------------------------------------------------------

IAM_ENV = {"DRS_TEARDOWN_IAM_USER": USER, "DRS_TEARDOWN_IAM_PASSWORD": PASSWORD,
           "DRS_TEARDOWN_IAM_DOMAIN": DOMAIN}
AKSK_ENV = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
TOKEN_ENV = {"DRS_TEARDOWN_AUTH_TOKEN": "MIIenv-token-value"}
ALL_SECRETS = (PASSWORD, SK, "MIIenv-token-value", "file-secret-value")


def _resolve(env: Mapping[str, str], file_values: Mapping[str, str] | None = None, **kw: object) -> DrsAuth:
    options: dict[str, object] = {"project_id": PROJECT, "region": "cn-north-4", "iam_endpoint": IAM}
    options.update(kw)
    return resolve_credentials(env, file_values, **options)  # type: ignore[arg-type]


def _refused(env: Mapping[str, str], file_values: Mapping[str, str] | None = None, **kw: object) -> str:
    with pytest.raises(CredentialError) as info:
        _resolve(env, file_values, **kw)
    message = str(info.value)
    for secret in ALL_SECRETS:
        assert secret not in message
    return message


def test_each_source_from_the_environment() -> None:
    assert isinstance(_resolve(TOKEN_ENV), TokenAuth)
    iam = _resolve(IAM_ENV)
    assert isinstance(iam, IamPasswordAuth) and iam.identity == f"iam-user:{DOMAIN}/{USER}"
    assert iam.endpoint == IAM
    aksk = _resolve({**AKSK_ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "st"})
    assert isinstance(aksk, AkSkAuth) and aksk.identity == "aksk:HPUA" + "*" * 16


def test_each_source_from_the_config_file() -> None:
    assert isinstance(_resolve({}, {"token": "MIIfile"}), TokenAuth)
    assert isinstance(_resolve({}, {"iam_user": USER, "iam_password": PASSWORD, "iam_domain": DOMAIN}),
                      IamPasswordAuth)
    assert isinstance(_resolve({}, {"access_key": AK, "secret_key": SK, "security_token": "st"}), AkSkAuth)


def test_environment_wins_over_the_file_key_by_key() -> None:
    auth = _resolve({"DRS_TEARDOWN_IAM_PASSWORD": PASSWORD, "DRS_TEARDOWN_IAM_ENDPOINT": "http://127.0.0.1:9"},
                    {"iam_user": USER, "iam_password": "file-secret-value", "iam_domain": DOMAIN,
                     "iam_endpoint": "https://iam.example.test"})
    assert isinstance(auth, IamPasswordAuth)
    assert auth.endpoint == "http://127.0.0.1:9"
    assert auth._password == PASSWORD  # private, but the only way to see which value won


def test_empty_values_count_as_unset() -> None:
    assert isinstance(_resolve({**TOKEN_ENV, "HUAWEICLOUD_SDK_AK": "", "HUAWEICLOUD_SDK_SK": ""}), TokenAuth)


def test_no_source_lists_the_variables_to_set() -> None:
    message = _refused({"DRS_TEARDOWN_IAM_DOMAIN": DOMAIN, "PATH": "/bin"})
    for var in ("DRS_TEARDOWN_AUTH_TOKEN", "DRS_TEARDOWN_IAM_USER", "DRS_TEARDOWN_IAM_PASSWORD",
                "DRS_TEARDOWN_IAM_DOMAIN", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
        assert var in message


@pytest.mark.parametrize(("env", "file_values", "named"), [
    ({**TOKEN_ENV, **AKSK_ENV}, None,
     ["DRS_TEARDOWN_AUTH_TOKEN", "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"]),
    ({**IAM_ENV, **AKSK_ENV}, None, ["DRS_TEARDOWN_IAM_USER", "HUAWEICLOUD_SDK_AK"]),
    (TOKEN_ENV, {"secret_key": "file-secret-value"}, ["DRS_TEARDOWN_AUTH_TOKEN", "[auth] secret_key"]),
    ({**TOKEN_ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "st"}, None, ["HUAWEICLOUD_SDK_SECURITY_TOKEN"]),
])
def test_two_sources_are_refused_naming_both(env: Mapping[str, str], file_values: Mapping[str, str] | None,
                                             named: list[str]) -> None:
    message = _refused(env, file_values)
    assert "more than one credential source" in message
    for name in named:
        assert name in message


@pytest.mark.parametrize(("env", "missing"), [
    ({"DRS_TEARDOWN_IAM_USER": USER, "DRS_TEARDOWN_IAM_DOMAIN": DOMAIN}, "DRS_TEARDOWN_IAM_PASSWORD"),
    ({"DRS_TEARDOWN_IAM_PASSWORD": PASSWORD, "DRS_TEARDOWN_IAM_DOMAIN": DOMAIN}, "DRS_TEARDOWN_IAM_USER"),
    ({"DRS_TEARDOWN_IAM_USER": USER, "DRS_TEARDOWN_IAM_PASSWORD": PASSWORD}, "DRS_TEARDOWN_IAM_DOMAIN"),
    ({"HUAWEICLOUD_SDK_AK": AK}, "HUAWEICLOUD_SDK_SK"),
    ({"HUAWEICLOUD_SDK_SK": SK}, "HUAWEICLOUD_SDK_AK"),
    ({"HUAWEICLOUD_SDK_SECURITY_TOKEN": "st"}, "HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK"),
])
def test_partial_sources_name_the_missing_variable(env: Mapping[str, str], missing: str) -> None:
    message = _refused(env)
    assert "incomplete" in message and f"{missing} not set" in message


def test_unknown_config_keys_are_named() -> None:
    message = _refused({}, {"secretkey": "file-secret-value", "token": "MIIx"})
    assert "secretkey" in message and "secret_key" in message


def test_scoping_and_project_requirements() -> None:
    assert "DRS_TEARDOWN_PROJECT_ID" in _refused(AKSK_ENV, project_id=None)
    assert "DRS_TEARDOWN_PROJECT_ID or DRS_TEARDOWN_REGION" in _refused(IAM_ENV, project_id=None, region=None)
    by_region = _resolve(IAM_ENV, project_id=None)
    assert isinstance(by_region, IamPasswordAuth) and by_region._scope == {"name": "cn-north-4"}
    assert isinstance(_resolve(TOKEN_ENV, project_id=None, region=None), TokenAuth)


def test_iam_endpoint_must_be_https_unless_loopback_or_insecure() -> None:
    env = {**IAM_ENV, "DRS_TEARDOWN_IAM_ENDPOINT": "http://iam.example.test"}
    with pytest.raises(ConfigError, match="--insecure-http"):
        _resolve(env)
    assert isinstance(_resolve(env, insecure_http=True), IamPasswordAuth)


# -- loopback: the real simulator ----------------------------------------------------------------------------

SIM_TOKEN = "MIIsimulator-configured-token"
SIM_SK = "simulatorSecretKey000000000000000000000"


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def sim(sim_clock: ManualClock) -> Simulator:
    return Simulator(
        project_id=PROJECT, seed=1, jobs=5, profile=load_profile("fast"), tokens={SIM_TOKEN},
        aksk={AK: SIM_SK}, iam_users={(USER, PASSWORD, DOMAIN)}, clock=sim_clock,
    )


def _batch_status(client: httpx.Client, ids: list[str]) -> httpx.Response:
    body = {"jobs": ids, "page_req": {"cur_page": 1, "per_page": 10}}
    return client.post(f"/v3/{PROJECT}/jobs/batch-status", content=json.dumps(body).encode())


def _sim_auths(base_url: str, clock: ManualClock) -> dict[str, DrsAuth]:
    return {
        "token": TokenAuth(SIM_TOKEN),
        "iam": IamPasswordAuth(USER, PASSWORD, DOMAIN, project_id=PROJECT, iam_endpoint=base_url,
                               clock=clock.now),
        "aksk": AkSkAuth(AK, SIM_SK, PROJECT, clock=clock.now),
    }


@pytest.mark.parametrize("kind", ["token", "iam", "aksk"])
def test_loopback_batch_status_with_each_source(sim: Simulator, sim_clock: ManualClock,
                                                kind: str) -> None:
    with sim.serve() as base_url, httpx.Client(base_url=base_url, headers=SDK_HEADERS,
                                               auth=_sim_auths(base_url, sim_clock)[kind]) as client:
        response = _batch_status(client, sim.seeded_ids[:3])
        assert response.status_code == 200, response.text
        assert [r["id"] for r in response.json()["results"]] == sim.seeded_ids[:3]
    routes = [entry["route"] for entry in sim.requests]
    assert routes == (["tokens", "batch-status"] if kind == "iam" else ["batch-status"])


def test_loopback_new_tokens_reach_the_redacting_filter(sim: Simulator) -> None:
    redactor = SecretRedactingFilter(collect_secrets(IAM_ENV))
    with sim.serve() as base_url:
        auth = _resolve(IAM_ENV, iam_endpoint=base_url, on_token=redactor.add)
        with httpx.Client(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
            response = _batch_status(client, sim.seeded_ids[:1])
    token = response.request.headers["X-Auth-Token"]
    assert redactor.redact(f"sent {token} for {PASSWORD}") == "sent *** for ***"


def test_loopback_wrong_sk_is_refused(sim: Simulator, sim_clock: ManualClock) -> None:
    auth = AkSkAuth(AK, SIM_SK + "wrong", PROJECT, clock=sim_clock.now)
    with sim.serve() as base_url, httpx.Client(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
        response = _batch_status(client, sim.seeded_ids[:1])
    assert response.status_code == 401
    assert response.json()["error_code"] == "APIGW.0301"


def test_loopback_stale_sdk_date_is_refused(sim: Simulator, sim_clock: ManualClock) -> None:
    auth = AkSkAuth(AK, SIM_SK, PROJECT, clock=lambda: sim_clock.now() - timedelta(minutes=16))
    with sim.serve() as base_url, httpx.Client(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
        assert _batch_status(client, sim.seeded_ids[:1]).status_code == 401


def test_loopback_wrong_iam_password_raises_auth_error(sim: Simulator) -> None:
    with sim.serve() as base_url:
        auth = IamPasswordAuth(USER, "not-the-password", DOMAIN, project_id=PROJECT, iam_endpoint=base_url)
        with httpx.Client(base_url=base_url, auth=auth) as client, pytest.raises(AuthError) as info:
            _batch_status(client, sim.seeded_ids[:1])
    assert "not-the-password" not in str(info.value)
    assert "HTTP 401" in str(info.value) and base_url in str(info.value)


def test_loopback_token_revoked_mid_session_is_renewed(sim: Simulator,
                                                       sim_clock: ManualClock) -> None:
    with sim.serve() as base_url:
        auth = _sim_auths(base_url, sim_clock)["iam"]
        with httpx.Client(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
            assert _batch_status(client, sim.seeded_ids[:1]).status_code == 200
            sim.expire_tokens()
            assert _batch_status(client, sim.seeded_ids[:1]).status_code == 200
    statuses = [(entry["route"], entry["status"], entry["error_code"]) for entry in sim.requests]
    assert statuses == [("tokens", 201, None), ("batch-status", 200, None),
                        ("batch-status", 401, "APIGW.0307"), ("tokens", 201, None),
                        ("batch-status", 200, None)]


def test_loopback_token_expiring_by_time_is_renewed_before_the_gateway_refuses(
        sim_clock: ManualClock) -> None:
    sim = Simulator(project_id=PROJECT, seed=1, jobs=2, profile=load_profile("fast"),
                              iam_users={(USER, PASSWORD, DOMAIN)}, clock=sim_clock, token_ttl_seconds=600)
    with sim.serve() as base_url:
        auth = _sim_auths(base_url, sim_clock)["iam"]
        with httpx.Client(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
            for _ in range(5):  # calls at t = 0, 200, 400, 600, 800 s
                assert _batch_status(client, sim.seeded_ids[:1]).status_code == 200
                sim_clock.advance(200)
    routes = [entry["route"] for entry in sim.requests]
    # 600 s tokens (less than twice the 5 min margin) renew at half life: fetched at t = 0, 400 and 800.
    # Without renewal the call at t = 600 would have met APIGW.0307.
    assert routes.count("tokens") == 3
    assert all(entry["status"] in (200, 201) for entry in sim.requests)


@pytest.mark.parametrize("kind", ["token", "iam", "aksk"])
def test_loopback_async_client(sim: Simulator, sim_clock: ManualClock, kind: str) -> None:
    async def main(base_url: str) -> list[int]:
        auth = _sim_auths(base_url, sim_clock)[kind]
        async with httpx.AsyncClient(base_url=base_url, headers=SDK_HEADERS, auth=auth) as client:
            body = json.dumps({"jobs": sim.seeded_ids, "page_req": {"cur_page": 1, "per_page": 10}}).encode()
            responses = await asyncio.gather(*(client.post(f"/v3/{PROJECT}/jobs/batch-status", content=body)
                                               for _ in range(5)))
            sim.expire_tokens()
            responses.append(await client.post(f"/v3/{PROJECT}/jobs/batch-status", content=body))
            return [r.status_code for r in responses]

    with sim.serve() as base_url:
        codes = asyncio.run(main(base_url))
    # A configured token cannot be renewed: once revoked it stays refused; the others carry on.
    assert codes == [200] * 5 + [401 if kind == "token" else 200]
    if kind == "iam":
        assert [entry["route"] for entry in sim.requests].count("tokens") == 2
