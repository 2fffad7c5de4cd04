"""AK/SK as an httpx.Auth: every request signed with SDK-HMAC-SHA256 exactly as the official SDK does."""

from __future__ import annotations

from collections.abc import Generator
from typing import ClassVar

import httpx

from orchestrator.drs import signing
from orchestrator.drs.credential import Clock, CredentialKind, DrsAuth, check_header_value, utcnow
from orchestrator.errors import CredentialError
from orchestrator.secrets import mask_access_key

# Headers the HTTP stack owns rather than the application: httpx adds Accept, Accept-Encoding, Connection and
# Content-Length to every request, proxies may rewrite hop-by-hop ones, and the cookie jar changes between
# calls. The official SDK never signs them either (requests adds them after it signs), which is why the §12.2
# vectors sign exactly content-type;host;user-agent;x-language;x-project-id;x-sdk-date.
UNSIGNED_HEADERS = frozenset({
    "accept", "accept-encoding", "authorization", "connection", "content-length", "cookie", "keep-alive",
    "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})



def _raw_path(url: httpx.URL) -> str:
    # The path exactly as sent (still percent-encoded): the signer decodes it once, as the gateway does.
    return url.raw_path.split(b"?", 1)[0].decode("ascii")


def _signable(name: str) -> bool:
    return "_" not in name and name.lower() not in UNSIGNED_HEADERS


class AkSkAuth(DrsAuth):
    """AK/SK: sign each request with SDK-HMAC-SHA256 exactly as the official SDK does (reference §12)."""

    kind: ClassVar[CredentialKind] = "aksk"
    # Signing hashes the body, so httpx must have it in memory before the flow runs.
    requires_request_body = True

    def __init__(self, access_key: str, secret_key: str, project_id: str, security_token: str | None = None,
                 *, clock: Clock = utcnow) -> None:
        self._access_key = check_header_value(access_key, "the access key (AK)")
        self._secret_key = secret_key.strip()
        if not self._secret_key:
            raise CredentialError("the secret key (SK) is empty")
        self._project_id = check_header_value(project_id, "the project id")
        self._security_token = (
            check_header_value(security_token, "the security token") if security_token else None
        )
        self._clock = clock
        self.identity = "aksk:" + mask_access_key(self._access_key)

    def sign(self, request: httpx.Request) -> httpx.Request:
        """Add X-Project-Id, X-Security-Token, X-Sdk-Date, Host, Content-Type and Authorization in place."""
        headers = request.headers
        headers["X-Project-Id"] = self._project_id
        if self._security_token:
            headers["X-Security-Token"] = self._security_token
        # Always fresh: a re-sent request must not carry an old date (the gateway allows 15 min of skew).
        headers["X-Sdk-Date"] = signing.sdk_date(self._clock())
        if "Host" not in headers:
            headers["Host"] = request.url.netloc.decode("ascii")
        if "Content-Type" not in headers:
            headers["Content-Type"] = "application/json"
        query = request.url.params.multi_items()
        if query:
            # Send the query exactly as signed (sorted, space as %20), as the SDK does: httpx writes a space
            # as '+', which a gateway may or may not decode to a space before it verifies.
            request.url = request.url.copy_with(query=signing.canonical_query(query).encode("ascii"))
        headers["Authorization"] = signing.sign(
            access_key=self._access_key,
            secret_key=self._secret_key,
            method=request.method,
            path=_raw_path(request.url),
            query=query,
            headers={name: value for name, value in headers.items() if _signable(name)},
            body=request.content,
        )
        return request

    def for_project(self, project_id: str, *, iam_endpoint: str | None = None) -> AkSkAuth:
        """The same keys, signing X-Project-Id for `project_id`."""
        return AkSkAuth(self._access_key, self._secret_key, project_id, self._security_token, clock=self._clock)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request signed."""
        yield self.sign(request)
