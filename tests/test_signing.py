"""The published SDK-HMAC-SHA256 vectors (reference/drs-api.md §12), reproduced bit-for-bit."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator.drs import signing

AK = "HPUAEXAMPLEAK0000000"
SK = "exampleSecretKey0000000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
HOST = "drs.cn-north-4.myhuaweicloud.com"
DRS_HEADERS = {
    "Content-Type": "application/json",
    "X-Language": "en-us",
    "User-Agent": "huaweicloud-usdk-python/3.0",
    "X-Sdk-Date": "20240101T000000Z",
    "X-Project-Id": PROJECT,
    "Host": HOST,
}


def _check(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes,
           ak: str, sk: str, hash_expected: str, sig_expected: str) -> str:
    signed = signing.signed_header_names(headers)
    canonical = signing.canonical_request(method, path, query, headers, signed, body)
    to_sign = signing.string_to_sign(canonical, headers["X-Sdk-Date"])
    assert to_sign.split("\n")[2] == hash_expected
    assert signing.signature(sk, to_sign) == sig_expected
    auth = signing.sign(access_key=ak, secret_key=sk, method=method, path=path, query=query,
                        headers=headers, body=body)
    assert auth.endswith(f"Signature={sig_expected}")
    return canonical


def test_published_signing_guide_vector() -> None:
    headers = {"Content-Type": "application/json", "X-Sdk-Date": "20191115T033655Z",
               "Host": "service.region.example.com"}
    canonical = _check(
        "GET", "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")], headers, b"",
        "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a",
        "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe",
    )
    assert canonical.splitlines()[1] == "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/"
    auth = signing.sign(access_key="QTWAOYTTINDUT2QVKYUC", secret_key="MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
                        method="GET", path="/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
                        query=[("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")],
                        headers=headers, body=b"")
    assert auth == ("SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, "
                    "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe")


def test_drs_batch_status_vector() -> None:
    body = b'{"jobs": ["9a470239-2308-4bb5-a6bc-1040402fjb21"], "page_req": {"cur_page": 1, "per_page": 10}}'
    canonical = _check("POST", f"/v3/{PROJECT}/jobs/batch-status", [], DRS_HEADERS, body, AK, SK,
                       "c6f51fc80700d0d10e770846a7165fb0aae186f9c2aeaf0c6de1233a49aeba40",
                       "53cda18ace3f84a0e516ba5e9c413c20faac1a89ce6af77114f24434f0ac4d49")
    assert canonical.endswith("480d49285d867a5056bf4d206568960b4f4330f5b3791923a3b24e96e90a84b7")


def test_drs_batch_jobs_delete_vector() -> None:
    body = b'{"jobs": [{"delete_type": "terminate", "job_id": "9a470239-2308-4bb5-a6bc-1040402fjb21"}]}'
    assert hashlib.sha256(body).hexdigest() == "068b320c4015564d28312628e0b8ad2a6b08a8e659bcf99b81d5925a254e18b7"
    _check("DELETE", f"/v3/{PROJECT}/jobs/batch-jobs", [], DRS_HEADERS, body, AK, SK,
           "eeb74984d6161d6b8f638d5ff56631ba39282a8e2f8fb78b75b9a0f1398e53e5",
           "8df045e9788c0869c935ac55d1f4f81637faf91e1985e2c5b5d1f6f99fcaea0a")


def test_get_with_query_vector() -> None:
    query = [("limit", "10"), ("offset", "0"), ("name", "a b/c")]
    assert signing.canonical_query(query) == "limit=10&name=a%20b%2Fc&offset=0"
    _check("GET", f"/v5/{PROJECT}/jobs", query, DRS_HEADERS, b"", AK, SK,
           "2c8bc959a9d1be8ba1e0c200cf34c1cf0208fbec685e6c94c815666f5b69bdc4",
           "b9b0dc1b7cfa95267e4d5084413abf4fdd157b495d5ec8e84886d0a33751414d")


def test_parse_authorization_round_trip_and_rejects_garbage() -> None:
    parsed = signing.parse_authorization("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=ab")
    assert parsed == signing.ParsedAuthorization("AK", ["host", "x-sdk-date"], "ab")
    assert signing.parse_authorization("Bearer xyz") is None
    assert signing.parse_authorization("SDK-HMAC-SHA256 Access=AK") is None


def test_sign_requires_date() -> None:
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        signing.sign(access_key="a", secret_key="b", method="GET", path="/", query=[], headers={"Host": "h"},
                     body=b"")
