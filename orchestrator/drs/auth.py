"""Credentials as httpx.Auth: a given IAM token, IAM password (token fetched and renewed), or AK/SK signing.

All three work with httpx.Client and httpx.AsyncClient, and expose ``kind`` and ``identity`` (safe to log and
store: it never contains a secret, and their ``repr`` shows only it).

Their errors (CredentialError, AuthError) are in the one tree of `orchestrator.errors`.

AK/SK signs a chosen subset of the headers sent (see ``UNSIGNED_HEADERS``): the gateway verifies over the
headers named in ``SignedHeaders``, so any subset that is sent unchanged verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx

from orchestrator.drs import signing
from orchestrator.drs.endpoints import GLOBAL_IAM_ENDPOINT, check_endpoint_url
from orchestrator.errors import AuthError, CredentialError
from orchestrator.secrets import AUTH_ENV_VARS, mask_access_key

Clock = Callable[[], datetime]
CredentialKind = Literal["token", "iam-password", "aksk"]

TOKEN_HEADER = "X-Auth-Token"
SUBJECT_TOKEN_HEADER = "X-Subject-Token"
IAM_CONTENT_TYPE = "application/json;charset=utf8"
TOKEN_PATH = "/v3/auth/tokens"
DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)
# Used only when IAM answers without a readable expires_at (it documents 24 h); APIGW.0307 covers the rest.
FALLBACK_TOKEN_LIFETIME = timedelta(hours=1)
TOKEN_EXPIRED_CODE = "APIGW.0307"
MAX_IAM_MESSAGE = 200

# Headers the HTTP stack owns rather than the application: httpx adds Accept, Accept-Encoding, Connection and
# Content-Length to every request, proxies may rewrite hop-by-hop ones, and the cookie jar changes between
# calls. The official SDK never signs them either (requests adds them after it signs), which is why the §12.2
# vectors sign exactly content-type;host;user-agent;x-language;x-project-id;x-sdk-date.
UNSIGNED_HEADERS = frozenset({
    "accept", "accept-encoding", "authorization", "connection", "content-length", "cookie", "keep-alive",
    "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)




def _check_header_value(value: str, what: str) -> str:
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


class TokenAuth(DrsAuth):
    """A given IAM token in X-Auth-Token; it is never renewed."""

    kind: ClassVar[CredentialKind] = "token"

    def __init__(self, token: str) -> None:
        self._token = _check_header_value(token, "the IAM token")
        self.identity = token_identity(self._token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request with the token."""
        request.headers[TOKEN_HEADER] = self._token
        yield request


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
        headers = {"Content-Type": IAM_CONTENT_TYPE, "Accept": "application/json"}
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
                    token_response.read()
                    token = self._store(token_response)
            request.headers[TOKEN_HEADER] = token
            response = yield request
            if attempt or response.status_code != 401:
                return
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
                    await token_response.aread()
                    token = self._store(token_response)
            request.headers[TOKEN_HEADER] = token
            response = yield request
            if attempt or response.status_code != 401:
                return
            await response.aread()
            if not token_rejected(response):
                return
            stale = token


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
        self._access_key = _check_header_value(access_key, "the access key (AK)")
        self._secret_key = secret_key.strip()
        if not self._secret_key:
            raise CredentialError("the secret key (SK) is empty")
        self._project_id = _check_header_value(project_id, "the project id")
        self._security_token = (
            _check_header_value(security_token, "the security token") if security_token else None
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

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request signed."""
        yield self.sign(request)


# -- choosing the credential source -------------------------------------------------------------------------

# The keys whose presence means a source is configured (domain and endpoint alone configure nothing).
_SOURCES: Mapping[str, tuple[str, ...]] = {
    "token": ("token",),
    "iam-password": ("iam_user", "iam_password"),
    "aksk": ("access_key", "secret_key", "security_token"),
}
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "token": ("token",),
    "iam-password": ("iam_user", "iam_password", "iam_domain"),
    "aksk": ("access_key", "secret_key"),
}


@dataclass(frozen=True)
class _Setting:
    value: str
    origin: str


class _Settings:
    """The [auth] values, each from the environment or else the config file, with where it came from."""

    def __init__(self, env: Mapping[str, str], file_values: Mapping[str, str] | None) -> None:
        file_values = file_values or {}
        unknown = sorted(set(file_values) - set(AUTH_ENV_VARS))
        if unknown:
            raise CredentialError(
                f"unknown key(s) in the config file's [auth] table: {', '.join(unknown)} "
                f"(known: {', '.join(AUTH_ENV_VARS)})"
            )
        self._values: dict[str, _Setting] = {}
        for key, var in AUTH_ENV_VARS.items():
            if env.get(var):
                self._values[key] = _Setting(env[var], var)
            elif file_values.get(key):
                self._values[key] = _Setting(str(file_values[key]), f"[auth] {key} in the config file")

    def get(self, key: str) -> str | None:
        setting = self._values.get(key)
        return setting.value if setting else None

    def origin(self, key: str) -> str:
        setting = self._values.get(key)
        return setting.origin if setting else AUTH_ENV_VARS[key]

    def present(self, source: str) -> list[str]:
        return [k for k in _SOURCES[source] if k in self._values]


_HOW_TO = (
    "DRS_TEARDOWN_AUTH_TOKEN; or DRS_TEARDOWN_IAM_USER, DRS_TEARDOWN_IAM_PASSWORD and "
    "DRS_TEARDOWN_IAM_DOMAIN; or HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK "
    "(in the environment, or the [auth] table of a 0600 config file)"
)


def _choose_source(settings: _Settings) -> str:
    configured = {source: settings.present(source) for source in _SOURCES}
    configured = {source: keys for source, keys in configured.items() if keys}
    if not configured:
        raise CredentialError(f"no credentials configured: set exactly one of {_HOW_TO}")
    if len(configured) > 1:
        described = " and ".join(
            "/".join(settings.origin(k) for k in keys) for keys in configured.values()
        )
        raise CredentialError(f"more than one credential source is configured: {described}; keep exactly one")
    (source,) = configured
    missing = [settings.origin(k) for k in _REQUIRED[source] if settings.get(k) is None]
    if missing:
        given = ", ".join(settings.origin(k) for k in configured[source])
        raise CredentialError(
            f"{source} credentials are incomplete: {', '.join(missing)} not set (given: {given})"
        )
    return source


def resolve_credentials(
    env: Mapping[str, str],
    file_values: Mapping[str, str] | None,
    *,
    project_id: str | None,
    region: str | None,
    iam_endpoint: str,
    insecure_http: bool = False,
    clock: Clock = utcnow,
    on_token: Callable[[str], None] | None = None,
) -> DrsAuth:
    """The one configured credential source as an httpx.Auth.

    Each setting comes from its environment variable, else from the config file's ``[auth]`` table, whose
    keys are ``token``, ``iam_user``, ``iam_password``, ``iam_domain``, ``iam_endpoint``, ``access_key``,
    ``secret_key`` and ``security_token`` (env: DRS_TEARDOWN_AUTH_TOKEN, DRS_TEARDOWN_IAM_USER/_PASSWORD/
    _DOMAIN/_ENDPOINT, HUAWEICLOUD_SDK_AK/_SK/_SECURITY_TOKEN). Exactly one source must be configured;
    ``iam_endpoint`` is the default that DRS_TEARDOWN_IAM_ENDPOINT / ``iam_endpoint`` override; ``on_token``
    receives each token IAM issues (e.g. ``SecretRedactingFilter.add``).
    """
    settings = _Settings(env, file_values)
    source = _choose_source(settings)
    if source == "token":
        return TokenAuth(settings.get("token") or "")
    if source == "aksk":
        if not project_id:
            raise CredentialError("AK/SK authentication needs a project id (DRS_TEARDOWN_PROJECT_ID)")
        return AkSkAuth(settings.get("access_key") or "", settings.get("secret_key") or "", project_id,
                        settings.get("security_token"), clock=clock)
    endpoint = check_endpoint_url(settings.get("iam_endpoint") or iam_endpoint, insecure_http=insecure_http,
                                  what="IAM endpoint")
    if not (project_id or region):
        raise CredentialError(
            "IAM password authentication needs DRS_TEARDOWN_PROJECT_ID or DRS_TEARDOWN_REGION "
            "to scope the token"
        )
    return IamPasswordAuth(
        settings.get("iam_user") or "", settings.get("iam_password") or "", settings.get("iam_domain") or "",
        project_id=project_id, project_name=None if project_id else region, iam_endpoint=endpoint,
        clock=clock, on_token=on_token,
    )
