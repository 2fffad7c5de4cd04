"""Endpoint resolution (reference/drs-api.md §1) and the http/https rule for URLs that receive credentials."""

from __future__ import annotations

import pytest

from orchestrator.drs.endpoints import (
    GLOBAL_IAM_ENDPOINT,
    Endpoints,
    check_endpoint_url,
    is_loopback_host,
    resolve_endpoints,
)
from orchestrator.errors import ConfigError


def test_region_gives_drs_and_regional_iam() -> None:
    assert resolve_endpoints("cn-north-4", None, None) == Endpoints(
        drs="https://drs.cn-north-4.myhuaweicloud.com", iam="https://iam.cn-north-4.myhuaweicloud.com"
    )


def test_eu_west_101_lives_on_the_eu_domain() -> None:
    assert resolve_endpoints("eu-west-101", None, None) == Endpoints(
        drs="https://drs.eu-west-101.myhuaweicloud.eu", iam="https://iam.eu-west-101.myhuaweicloud.eu"
    )


def test_overrides_win_and_lose_their_trailing_slash() -> None:
    endpoints = resolve_endpoints("cn-north-4", "http://127.0.0.1:8080/", "http://127.0.0.1:8081/")
    assert endpoints == Endpoints(drs="http://127.0.0.1:8080", iam="http://127.0.0.1:8081")


def test_endpoint_without_region_uses_the_global_iam() -> None:
    assert resolve_endpoints(None, "https://drs.example.test", None) == Endpoints(
        drs="https://drs.example.test", iam=GLOBAL_IAM_ENDPOINT
    )


def test_neither_region_nor_endpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match="DRS_TEARDOWN_REGION") as info:
        resolve_endpoints(None, None, None)
    assert "DRS_TEARDOWN_ENDPOINT" in str(info.value)


@pytest.mark.parametrize("region", ["CN-NORTH-4", "cn_north_4", "cn-north-4/", "-cn", "cn--north", "",
                                    "a" * 65, "cn-north-4.evil.example"])
def test_bad_regions_are_named(region: str) -> None:
    with pytest.raises(ConfigError, match="invalid region") as info:
        resolve_endpoints(region, None, None)
    assert repr(region) in str(info.value)


@pytest.mark.parametrize("region", ["cn-north-4", "ap-southeast-1", "af-south-1", "my-kualalumpur-1",
                                    "eu-west-0"])
def test_good_regions(region: str) -> None:
    assert resolve_endpoints(region, None, None).drs == f"https://drs.{region}.myhuaweicloud.com"


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("url", "insecure", "ok"),
    [
        ("https://drs.cn-north-4.myhuaweicloud.com", False, True),
        ("https://10.0.0.1:8443/", False, True),
        ("http://127.0.0.1:8080", False, True),
        ("http://127.1.2.3", False, True),
        ("http://[::1]:8080", False, True),
        ("http://localhost:9000", False, True),
        ("http://LOCALHOST", False, True),
        ("http://drs.cn-north-4.myhuaweicloud.com", False, False),
        ("http://10.0.0.1", False, False),
        ("http://localhost.example.com", False, False),
        ("http://128.0.0.1", False, False),
        ("http://drs.cn-north-4.myhuaweicloud.com", True, True),
        ("ftp://127.0.0.1", False, False),
        ("ftp://127.0.0.1", True, False),
        ("drs.cn-north-4.myhuaweicloud.com", False, False),
        ("https://", False, False),
        ("https://host:notaport", False, False),
    ],
)
def test_check_endpoint_url_matrix(url: str, insecure: bool, ok: bool) -> None:
    if ok:
        assert check_endpoint_url(url, insecure_http=insecure, what="DRS endpoint") == url.rstrip("/")
    else:
        with pytest.raises(ConfigError) as info:
            check_endpoint_url(url, insecure_http=insecure, what="DRS endpoint")
        assert url in str(info.value)
        assert str(info.value).startswith("DRS endpoint")


def test_plain_http_error_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"use https, or pass --insecure-http"):
        check_endpoint_url("http://drs.example.com", insecure_http=False, what="IAM endpoint")


def test_credentials_in_a_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError, match="embeds credentials") as info:
        check_endpoint_url("https://alice:hunter2pw@drs.example.com:8443", insecure_http=False,
                           what="DRS endpoint")
    assert "hunter2pw" not in str(info.value)
    assert "drs.example.com:8443" in str(info.value)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("::", False), ("example.com", False)])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
