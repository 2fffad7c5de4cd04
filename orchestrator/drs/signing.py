"""SDK-HMAC-SHA256 request signing, byte-for-byte as huaweicloudsdkcore's Signer (reference/drs-api.md §12).

Used by the client (AK/SK auth) and by the simulator (verification), so both sides share one definition.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# The gateway rejects an X-Sdk-Date further than this from its clock.
MAX_SKEW_SECONDS = 15 * 60


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """Decode, re-encode each segment per RFC 3986, and end with '/' (the SDK signs with a trailing slash)."""
    segments = unquote(path).split("/")
    uri = "/".join(_encode(s) for s in segments)
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Sorted key=value pairs, both encoded; an empty string when there is no query."""
    pairs = sorted((_encode(str(k)), _encode(str(v))) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Every header whose name has no '_', lower-cased and sorted (the SDK signs them all)."""
    return sorted({name.lower() for name in headers if "_" not in name})


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
) -> str:
    lowered = {k.lower(): str(v).strip() for k, v in headers.items()}
    payload_hash = lowered.get("x-sdk-content-sha256") or hashlib.sha256(body).hexdigest()
    header_block = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            header_block,
            ";".join(signed),
            payload_hash,
        ]
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key: str, signed: list[str], sig: str) -> str:
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={sig}"


def sdk_date(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime(DATE_FORMAT)


def sign(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """Return the Authorization header value for a request whose headers already hold X-Sdk-Date and Host."""
    signed = signed_header_names(headers)
    date = next((v for k, v in headers.items() if k.lower() == "x-sdk-date"), None)
    if date is None:
        raise ValueError("X-Sdk-Date must be set before signing")
    canonical = canonical_request(method, path, query, headers, signed, body)
    return authorization_header(access_key, signed, signature(secret_key, string_to_sign(canonical, date)))


@dataclass(frozen=True)
class ParsedAuthorization:
    access_key: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Parse 'SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...'; None if it is not that form."""
    if not value.startswith(ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1 :].split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        return ParsedAuthorization(
            access_key=fields["Access"],
            signed_headers=[h for h in fields["SignedHeaders"].split(";") if h],
            signature=fields["Signature"],
        )
    except KeyError:
        return None
