"""Where DRS and IAM live: endpoints from a region or explicit overrides, and the http/https rule.

reference/drs-api.md §1: DRS is ``https://drs.{region}.myhuaweicloud.com`` (``eu-west-101`` is on
``myhuaweicloud.eu``), IAM is regional ``https://iam.{region}...`` or the global ``https://iam.myhuaweicloud.com``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from orchestrator.errors import ConfigError

GLOBAL_IAM_ENDPOINT = "https://iam.myhuaweicloud.com"
DEFAULT_DOMAIN = "myhuaweicloud.com"
# The European station runs on its own domain, for DRS and IAM alike (SDK drs_region / iam_region).
REGION_DOMAINS = {"eu-west-101": "myhuaweicloud.eu"}
REGION_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_REGION_LENGTH = 64
LOOPBACK_NAMES = frozenset({"localhost"})
# BSS (billing) is global, one endpoint per site: the Chinese site and the international one.
BSS_ENDPOINTS = {"cn": "https://bss.myhuaweicloud.com", "intl": "https://bss-intl.myhuaweicloud.com"}


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the DRS API and of IAM (no trailing slash)."""

    drs: str
    iam: str


def validate_region(region: str) -> str:
    """The region if it looks like a Huawei Cloud region id (e.g. cn-north-4), else ConfigError."""
    if len(region) > MAX_REGION_LENGTH or not REGION_PATTERN.fullmatch(region):
        raise ConfigError(
            f"invalid region {region!r}: expected lowercase letters, digits and hyphens, e.g. cn-north-4"
        )
    return region


def region_domain(region: str) -> str:
    """The DNS domain a region's service endpoints live under."""
    return REGION_DOMAINS.get(region, DEFAULT_DOMAIN)


def resolve_endpoints(region: str | None, endpoint: str | None, iam_endpoint: str | None) -> Endpoints:
    """DRS and IAM base URLs: explicit overrides win, else derived from the region."""
    if region is not None:
        validate_region(region)
    endpoint = (endpoint or "").strip()
    iam_endpoint = (iam_endpoint or "").strip()
    if endpoint:
        drs = endpoint
    elif region:
        drs = f"https://drs.{region}.{region_domain(region)}"
    else:
        raise ConfigError(
            "no DRS endpoint: set a region (--region or DRS_TEARDOWN_REGION, e.g. cn-north-4) "
            "or an endpoint (DRS_TEARDOWN_ENDPOINT)"
        )
    if iam_endpoint:
        iam = iam_endpoint
    elif region:
        iam = f"https://iam.{region}.{region_domain(region)}"
    else:
        iam = GLOBAL_IAM_ENDPOINT
    return Endpoints(drs=drs.rstrip("/"), iam=iam.rstrip("/"))


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: traffic that never leaves the machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact_userinfo(parts: SplitResult) -> str:
    # A URL may embed user:password@; an error message must not repeat it.
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@, by text alone (it works on URLs that do not parse)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{tail}"


def parse_base_url(url: str, *, what: str) -> str:
    """`url` stripped of surrounding whitespace and a trailing slash if it is an http(s) URL with a host that
    httpx can use, else ConfigError naming `what` (never repeating a user:password@ it embeds)."""
    url = url.strip()
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{what} {shown!r} is not a valid URL: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{what} {_redact_userinfo(parts)!r} embeds credentials (user:password@); "
            "credentials come from the environment or a 0600 config file"
        )
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"{what} {shown!r} must be an http or https URL with a host, "
            "e.g. https://drs.cn-north-4.myhuaweicloud.com"
        )
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ConfigError(f"{what} {shown!r} is not a valid URL: it contains whitespace or control characters")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{what} {shown!r} is not a valid URL: {exc}") from None
    return url.rstrip("/")


def check_endpoint_url(url: str, *, insecure_http: bool, what: str) -> str:
    """The URL (as `parse_base_url` returns it) if credentials may be sent to it, else ConfigError naming `what`;
    never a URL's password in the message."""
    url = parse_base_url(url, what=what)
    host = urlsplit(url).hostname or ""
    if url.lower().startswith("http://") and not insecure_http and not is_loopback_host(host):
        raise ConfigError(
            f"{what} {url!r} uses plain http to a non-loopback host, which would send credentials "
            "in clear text: use https, or pass --insecure-http if you really mean it"
        )
    return url


def resolve_bss_endpoint(site: str | None, explicit: str | None, insecure_http: bool = False) -> str:
    """The BSS base URL: `explicit` (DRS_TEARDOWN_BSS_ENDPOINT) wins, else the site's (--bss-site cn|intl)."""
    if explicit and explicit.strip():
        return check_endpoint_url(explicit, insecure_http=insecure_http,
                                  what="BSS endpoint (DRS_TEARDOWN_BSS_ENDPOINT)")
    key = (site or "").strip().lower()
    if key in BSS_ENDPOINTS:
        return BSS_ENDPOINTS[key]
    if not key:
        raise ConfigError("no BSS endpoint: set --bss-site cn (bss.myhuaweicloud.com) or intl "
                          "(bss-intl.myhuaweicloud.com), or DRS_TEARDOWN_BSS_ENDPOINT")
    raise ConfigError(f"invalid --bss-site {site!r}: expected one of {', '.join(BSS_ENDPOINTS)}")
