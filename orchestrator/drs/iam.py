"""IAM user password as an httpx.Auth: a project-scoped token fetched through the same client, cached, and
renewed before it expires or when the gateway says it must be (401 APIGW.0307)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

import httpx

from orchestrator.drs.credential import TOKEN_HEADER, Clock, CredentialKind, DrsAuth, utcnow
from orchestrator.drs.endpoints import GLOBAL_IAM_ENDPOINT
from orchestrator.drs.reading import MAX_RESPONSE_BYTES, size_text, too_large
from orchestrator.errors import AuthError, CredentialError

SUBJECT_TOKEN_HEADER = "X-Subject-Token"
IAM_CONTENT_TYPE = "application/json;charset=utf8"
TOKEN_PATH = "/v3/auth/tokens"
DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)
# Used only when IAM answers without a readable expires_at (it documents 24 h); APIGW.0307 covers the rest.
FALLBACK_TOKEN_LIFETIME = timedelta(hours=1)
TOKEN_EXPIRED_CODE = "APIGW.0307"
MAX_IAM_MESSAGE = 200
class _Capped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An answer's stream that raises `too_large()` once it has given more than the cap (DRS answers' 16 MiB):
    IAM's answer is read under the same cap as DRS answers, and httpx closes the rest unread."""

    def __init__(self, stream: Any, too_large: Callable[[], Exception], cap: int = MAX_RESPONSE_BYTES) -> None:
        self._stream, self._too_large, self._cap = stream, too_large, cap

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            if seen > self._cap:
                raise self._too_large()
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._cap:
                raise self._too_large()
            yield chunk

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _too_large(response: httpx.Response) -> Exception:
    """A DRS 401 read here (is it APIGW.0307?) is read under the cap as every DRS answer (a malformed answer)."""
    return too_large("answer", str(response.request.url), MAX_RESPONSE_BYTES, response.status_code)


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: datetime
    refresh_at: datetime


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(body: Mapping[str, Any]) -> str | None:
    # CORE accepts error_code/errorCode/code (reference/drs-api.md §10.1).
    for key in ("error_code", "errorCode", "code"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    return None


def token_rejected(response: httpx.Response) -> bool:
    """True for the gateway's 'token must be updated' (401 APIGW.0307); the body must have been read."""
    return response.status_code == 401 and _error_code(_json_body(response)) == TOKEN_EXPIRED_CODE


def _parse_expiry(body: Mapping[str, Any]) -> datetime | None:
    token = body.get("token")
    raw = token.get("expires_at") if isinstance(token, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iam_message(body: Mapping[str, Any]) -> str:
    """IAM's own explanation: Keystone {"error": {"message"}} or the gateway's error_msg."""
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    message = body.get("error_msg")
    return message if isinstance(message, str) else ""


class IamPasswordAuth(DrsAuth):
    """IAM user password: fetch a project-scoped token; renew it before it expires or when the gateway asks.

    The token request is yielded from the auth flow, so it goes through the same client (transport, hooks,
    timeouts) as the calls it authenticates.
    """

    kind: ClassVar[CredentialKind] = "iam-password"

    def __init__(
        self,
        user: str,
        password: str,
        domain: str,
        *,
        project_id: str | None = None,
        project_name: str | None = None,
        iam_endpoint: str = GLOBAL_IAM_ENDPOINT,
        clock: Clock = utcnow,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        if not (user and password and domain):
            raise CredentialError("IAM password authentication needs a user, a password and a domain")
        if not (project_id or project_name):
            raise CredentialError(
                "IAM password authentication needs a project id or a region name to scope the token to"
            )
        self._user, self._password, self._domain = user, password, domain
        self._scope = {"id": project_id} if project_id else {"name": project_name}
        self.endpoint = iam_endpoint.rstrip("/")
        self._token_url = httpx.URL(self.endpoint + TOKEN_PATH)
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._on_token = on_token
        self.identity = f"iam-user:{domain}/{user}"
        self._token: _Token | None = None
        self._sync_lock = threading.Lock()
        # Created unbound; asyncio binds it to a loop only on first contention.
        self._async_lock = asyncio.Lock()

    def for_project(self, project_id: str, *, iam_endpoint: str | None = None) -> IamPasswordAuth:
        """The same user, scoped to `project_id`: a token of its own, fetched and renewed on its own."""
        return IamPasswordAuth(self._user, self._password, self._domain, project_id=project_id,
                               iam_endpoint=iam_endpoint or self.endpoint, clock=self._clock,
                               refresh_margin=self._refresh_margin, on_token=self._on_token)

    # -- the token ----------------------------------------------------------------------------------------

    def _cached(self, stale: str | None) -> str | None:
        """The cached token if it is fresh and is not the one the gateway just rejected."""
        token = self._token
        if token is None or token.value == stale or self._clock() >= token.refresh_at:
            return None
        return token.value

    def _token_request(self, original: httpx.Request) -> httpx.Request:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self._user, "password": self._password, "domain": {"name": self._domain}}}},
            "scope": {"project": self._scope},
        }}
        # identity: the cap on the bytes read is then a cap on the body
        headers = {"Content-Type": IAM_CONTENT_TYPE, "Accept": "application/json", "Accept-Encoding": "identity"}
        if "User-Agent" in original.headers:
            headers["User-Agent"] = original.headers["User-Agent"]
        # Without the client's timeout extension a hand-built request would wait forever on a silent IAM.
        extensions = {k: v for k, v in original.extensions.items() if k == "timeout"}
        return httpx.Request(
            "POST", self._token_url.copy_with(params={"nocatalog": "true"}),
            headers=headers, content=json.dumps(body).encode("utf-8"), extensions=extensions,
        )

    def _refresh_at(self, now: datetime, expires_at: datetime) -> datetime:
        # Never renew before half the lifetime is gone, so a short-lived token is not renewed on every call.
        lifetime = max(expires_at - now, timedelta(0))
        return expires_at - min(self._refresh_margin, lifetime / 2)

    def _error(self, message: str, **kw: Any) -> AuthError:
        text = f"IAM at {self.endpoint} {message} for user {self._domain}/{self._user}"
        return AuthError(text, endpoint=self.endpoint, user=self._user, **kw)

    def _store(self, response: httpx.Response) -> str:
        """Cache the token from IAM's answer (the body must have been read), or raise AuthError."""
        body = _json_body(response)
        request_id = response.headers.get("X-Request-Id")
        status = response.status_code
        if status not in (200, 201):
            # IAM's message is quoted back; make sure it cannot carry the password along.
            detail = _iam_message(body)[:MAX_IAM_MESSAGE].replace(self._password, "***")
            raise self._error(
                f"refused a token (HTTP {status}{': ' + detail if detail else ''})",
                status_code=status, request_id=request_id, retryable=status >= 500 or status == 429,
            )
        value = str(response.headers.get(SUBJECT_TOKEN_HEADER, "")).strip()
        if not value:
            raise self._error(f"answered HTTP {status} without an {SUBJECT_TOKEN_HEADER} header",
                              status_code=status, request_id=request_id)
        now = self._clock()
        expires_at = _parse_expiry(body) or now + FALLBACK_TOKEN_LIFETIME
        self._token = _Token(value, expires_at, self._refresh_at(now, expires_at))
        if self._on_token is not None:
            self._on_token(value)
        return value

    def auth_error_for(self, exc: httpx.TransportError) -> AuthError | None:
        """Translate a connection failure on the token request; httpx raises it outside the auth flow."""
        try:
            url = exc.request.url
        except RuntimeError:
            return None
        if url.copy_with(query=None) != self._token_url:
            return None
        reason = f"{type(exc).__name__}: {exc}"
        return self._error(f"could not be reached to get a token ({reason})", retryable=True)

    def _too_large(self) -> AuthError:
        return self._error(f"answered a token request with more than {size_text(MAX_RESPONSE_BYTES)}", retryable=True)

    # -- the flows ----------------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Authenticate; on APIGW.0307 renew the token once and retry once."""
        request.read()  # so the retry can send the body again
        stale: str | None = None
        for attempt in range(2):
            with self._sync_lock:
                token = self._cached(stale)
                if token is None:
                    token_response = yield self._token_request(request)
                    token_response.stream = _Capped(token_response.stream, self._too_large)
                    token_response.read()
                    token = self._store(token_response)
            request.headers[TOKEN_HEADER] = token
            response = yield request
            if attempt or response.status_code != 401:
                return
            response.stream = _Capped(response.stream, partial(_too_large, response))
            response.read()
            if not token_rejected(response):
                return
            stale = token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authenticate; on APIGW.0307 renew the token once and retry once."""
        await request.aread()  # so the retry can send the body again
        stale: str | None = None
        for attempt in range(2):
            async with self._async_lock:
                token = self._cached(stale)
                if token is None:
                    token_response = yield self._token_request(request)
                    token_response.stream = _Capped(token_response.stream, self._too_large)
                    await token_response.aread()
                    token = self._store(token_response)
            request.headers[TOKEN_HEADER] = token
            response = yield request
            if attempt or response.status_code != 401:
                return
            response.stream = _Capped(response.stream, partial(_too_large, response))
            await response.aread()
            if not token_rejected(response):
                return
            stale = token
