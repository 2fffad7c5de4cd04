"""Gateway authentication: IAM tokens (issued and configured) and AK/SK SDK-HMAC-SHA256 verification.

Several simulators can stand for several regions of one account: they then share one `IamDirectory` (the
tokens IAM issued and the projects it knows), so a token scoped to project A is recognised by region B's
gateway, and refused there for B's path with 403 DRS.M00261.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.clock import Clock
from orchestrator.drs import signing

from .messages import keystone_error


@dataclass(frozen=True)
class AuthOutcome:
    """Who the caller is, or why the gateway refuses them (code and message detail for APIGW.03xx)."""

    kind: str  # "token", "aksk" or "none"
    identity: str = ""  # the user, or the AK: never a secret
    project_id: str | None = None  # the project the credential is scoped to (None: any / not scoped)
    error_code: str | None = None
    error_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass
class _Token:
    user: str
    project_id: str | None
    expires_at: datetime


# The account's token signing key: simulators in separate processes verify each other's tokens with it, as
# every region's gateway verifies IAM's (PKI) tokens. A test value, not a secret.
ACCOUNT_KEY = b"drs-simulator-account"


class IamDirectory:
    """What IAM knows, shared by the simulators of one account: issued tokens and projects by name and id.

    Issued tokens also carry their own signed claims (user, project, expiry), so a simulator that did not
    issue a token (another process standing for another region) still accepts it.
    """

    def __init__(self, key: bytes = ACCOUNT_KEY) -> None:
        self.lock = threading.Lock()
        self.key = key
        self.tokens: dict[str, _Token] = {}
        self.projects: dict[str, str] = {}  # project name (the region) -> project id
        self.expired_before: datetime | None = None  # expire_all(): signed tokens issued before are expired

    def mint(self, user: str, project_id: str | None, issued: datetime, expires: datetime) -> str:
        claims = json.dumps({"u": user, "p": project_id, "i": issued.timestamp(), "e": expires.timestamp(),
                             "n": secrets.token_hex(16)}, separators=(",", ":")).encode()
        mac = hmac.new(self.key, claims, hashlib.sha256).digest()
        return "MII" + _b64(claims) + "." + _b64(mac)

    def verify(self, token: str) -> _Token | None:
        """The claims of a token this account signed (None: not one of ours, or tampered with)."""
        if not token.startswith("MII") or "." not in token:
            return None
        try:
            claims_part, mac_part = token[3:].split(".", 1)
            claims = _unb64(claims_part)
            if not hmac.compare_digest(hmac.new(self.key, claims, hashlib.sha256).digest(), _unb64(mac_part)):
                return None
            data = json.loads(claims)
            issued = datetime.fromtimestamp(float(data["i"]), UTC)
            expires = datetime.fromtimestamp(float(data["e"]), UTC)
        except (ValueError, KeyError, TypeError):
            return None
        with self.lock:
            if self.expired_before is not None and issued < self.expired_before:
                expires = min(expires, self.expired_before)
        return _Token(str(data["u"]), data["p"], expires)

    def add_project(self, name: str, project_id: str) -> None:
        with self.lock:
            known = self.projects.get(name)
            if known is not None and known != project_id:
                raise ValueError(f"project {name!r} is already {known}")
            self.projects[name] = project_id

    def find_project(self, wanted: dict[str, Any]) -> tuple[str, str] | None:
        """(name, id) of the project a scope names by id and/or name, None when no such project."""
        with self.lock:
            for name, project_id in self.projects.items():
                if wanted.get("id") in (None, project_id) and wanted.get("name") in (None, name):
                    if wanted.get("id") is None and wanted.get("name") is None:
                        return None
                    return name, project_id
        return None


class Authenticator:
    """Holds the accepted credentials and checks a request's headers against them."""

    def __init__(
        self,
        clock: Clock,
        project_id: str,
        *,
        tokens: Iterable[str] = (),
        aksk: Mapping[str, str] | None = None,
        security_tokens: Mapping[str, str] | None = None,
        iam_users: Iterable[tuple[str, str, str]] = (),
        token_ttl_seconds: float = 86400.0,
        region: str = "cn-north-4",
        directory: IamDirectory | None = None,
    ) -> None:
        self.directory = directory or IamDirectory()
        self.directory.add_project(region, project_id)
        self._lock = self.directory.lock
        self.clock = clock
        self.project_id = project_id
        self.region = region
        self.aksk = dict(aksk or {})
        self.security_tokens = dict(security_tokens or {})
        self.iam_users = set(iam_users)
        self.token_ttl_seconds = token_ttl_seconds
        # Configured tokens are valid for the project until expire_all(); a far-future expiry means "never".
        far = datetime(9999, 1, 1, tzinfo=UTC)
        self._tokens = self.directory.tokens
        with self._lock:
            self._tokens.update({t: _Token("configured", project_id, far) for t in tokens})

    # -- tokens -------------------------------------------------------------------------------------------

    def issue(self, body: Any) -> tuple[int, dict[str, Any], str | None]:
        """POST /v3/auth/tokens: (status, body, token) with Keystone-style errors."""
        try:
            auth = body["auth"]
            identity = auth["identity"]
            if "password" not in identity["methods"]:
                return _keystone(
                    400, "Bad Request", "The request you have made requires the password method."
                )
            user = identity["password"]["user"]
            name, password = user["name"], user["password"]
            domain = user["domain"]["name"]
        except (KeyError, TypeError):
            return _keystone(
                400, "Bad Request", "Invalid auth body: auth.identity.password.user is required."
            )
        if (name, password, domain) not in self.iam_users:
            return _keystone(401, "Unauthorized", "The username or password is wrong.")
        scope = auth.get("scope") if isinstance(auth, dict) else None
        project: dict[str, Any] | None = None
        if isinstance(scope, dict) and isinstance(scope.get("project"), dict):
            found = self.directory.find_project(scope["project"])
            if found is None:
                return _keystone(
                    401, "Unauthorized", "The project in scope does not exist or is not accessible."
                )
            project = {
                "id": found[1],
                "name": found[0],
                "domain": {"id": _hex_id(domain), "name": domain},
            }
        now = self.clock.now()
        expires = now + timedelta(seconds=self.token_ttl_seconds)
        token = self.directory.mint(name, project["id"] if project else None, now, expires)
        with self._lock:
            self._tokens[token] = _Token(name, project["id"] if project else None, expires)
        out: dict[str, Any] = {
            "expires_at": _iso(expires),
            "issued_at": _iso(now),
            "methods": ["password"],
            "roles": [{"id": _hex_id("te_admin"), "name": "te_admin"}],
            "user": {
                "id": _hex_id(name),
                "name": name,
                "domain": {"id": _hex_id(domain), "name": domain},
                "password_expires_at": "",
            },
        }
        if project:
            out["project"] = project
        else:
            out["domain"] = {"id": _hex_id(domain), "name": domain}
        return 201, {"token": out}, token

    def expire_all(self) -> None:
        """Every token issued or configured so far expires now."""
        now = self.clock.now()
        with self._lock:
            for tok in self._tokens.values():
                tok.expires_at = min(tok.expires_at, now)
            self.directory.expired_before = now

    # -- request checks -----------------------------------------------------------------------------------

    def check(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> AuthOutcome:
        """Authenticate one request the way APIG does; headers are keyed lower-case."""
        authorization = headers.get("authorization")
        if authorization:
            return self._check_aksk(method, raw_path, query, headers, body, authorization)
        token = headers.get("x-auth-token")
        if not token:
            return AuthOutcome("none", error_code="APIGW.0301", error_detail="x-auth-token not found")
        with self._lock:
            found = self._tokens.get(token)
        if found is None:
            found = self.directory.verify(token)
        if found is None:
            return AuthOutcome("token", error_code="APIGW.0301", error_detail="decrypt token fail")
        if self.clock.now() >= found.expires_at:
            return AuthOutcome("token", identity=found.user, error_code="APIGW.0307")
        # A domain-scoped token ("" here) matches no project path: the DRS check answers 403.
        return AuthOutcome("token", identity=found.user, project_id=found.project_id or "")

    def _check_aksk(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        authorization: str,
    ) -> AuthOutcome:
        fail = AuthOutcome("aksk", error_code="APIGW.0301", error_detail="verify aksk signature fail")
        parsed = signing.parse_authorization(authorization)
        if parsed is None or parsed.access_key not in self.aksk:
            return fail
        signed = parsed.signed_headers
        # The gateway needs the date and host under the signature; a client that leaves them out is refused.
        if "x-sdk-date" not in signed or "host" not in signed or any(h not in headers for h in signed):
            return fail
        try:
            date = datetime.strptime(headers["x-sdk-date"], signing.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return fail
        if abs((self.clock.now() - date).total_seconds()) > signing.MAX_SKEW_SECONDS:
            return fail
        wanted_security = self.security_tokens.get(parsed.access_key)
        got_security = headers.get("x-security-token")
        if got_security != wanted_security or (wanted_security and "x-security-token" not in signed):
            return fail
        canonical = signing.canonical_request(
            method, raw_path, query, {h: headers[h] for h in signed}, signed, body
        )
        expected = signing.signature(
            self.aksk[parsed.access_key], signing.string_to_sign(canonical, headers["x-sdk-date"])
        )
        if not hmac.compare_digest(expected, parsed.signature):
            return fail
        # AK/SK is account-wide; X-Project-Id (signed) says which project the caller means.
        return AuthOutcome("aksk", identity=parsed.access_key, project_id=headers.get("x-project-id"))


def _keystone(status: int, title: str, message: str) -> tuple[int, dict[str, Any], None]:
    return status, keystone_error(status, title, message), None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hex_id(text: str) -> str:
    """A stable 32-hex id for a name (users, domains, roles have ids like that)."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
