"""The credential base: an httpx.Auth that describes its credential without revealing it, and the given-token
auth. IAM password auth is in `orchestrator.drs.iam`, AK/SK in `orchestrator.drs.aksk`; `orchestrator.drs.auth`
is the face over all three and chooses among them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import ClassVar, Literal

import httpx

from orchestrator.errors import AuthError, CredentialError

Clock = Callable[[], datetime]
CredentialKind = Literal["token", "iam-password", "aksk"]
TOKEN_HEADER = "X-Auth-Token"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def check_header_value(value: str, what: str) -> str:
    """Strip the value and refuse control characters, which httpx would echo in its own error."""
    value = value.strip()
    if not value:
        raise CredentialError(f"{what} is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise CredentialError(f"{what} contains control characters (a stray newline?)")
    return value


def token_identity(token: str) -> str:
    """'iam-token:' + the first 8 hex digits of the token's SHA-256: tells tokens apart, reveals nothing."""
    return "iam-token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


class DrsAuth(httpx.Auth):
    """An httpx.Auth that can describe its credential without revealing it."""

    kind: ClassVar[CredentialKind]
    identity: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"

    def auth_error_for(self, exc: httpx.TransportError) -> AuthError | None:
        """An AuthError when a transport error happened on a request this auth made itself, else None."""
        return None

    def for_project(self, project_id: str, *, iam_endpoint: str | None = None) -> DrsAuth:
        """The same credential for another project (one auth object per target project)."""
        raise NotImplementedError


class TokenAuth(DrsAuth):
    """A given IAM token in X-Auth-Token; it is never renewed."""

    kind: ClassVar[CredentialKind] = "token"

    def __init__(self, token: str) -> None:
        self._token = check_header_value(token, "the IAM token")
        self.identity = token_identity(self._token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request with the token."""
        request.headers[TOKEN_HEADER] = self._token
        yield request

    def for_project(self, project_id: str, *, iam_endpoint: str | None = None) -> DrsAuth:
        """The token is scoped to the one project it was issued for: the same auth (refusing several projects
        is `resolve_target_credentials`' job, before any call)."""
        return self
