"""Credentials as httpx.Auth: a given IAM token, IAM password (token fetched and renewed), or AK/SK signing,
and the choice among them from the environment and the config file (one auth, or one per target project).

All three work with httpx.Client and httpx.AsyncClient, and expose ``kind`` and ``identity`` (safe to log and
store: it never contains a secret, and their ``repr`` shows only it). Their errors (CredentialError, AuthError)
are in the one tree of `orchestrator.errors`.

AK/SK signs a chosen subset of the headers sent (see ``UNSIGNED_HEADERS``): the gateway verifies over the
headers named in ``SignedHeaders``, so any subset that is sent unchanged verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.drs.aksk import UNSIGNED_HEADERS, AkSkAuth
from orchestrator.drs.credential import TOKEN_HEADER, Clock, CredentialKind, DrsAuth, TokenAuth, token_identity, utcnow
from orchestrator.drs.endpoints import check_endpoint_url
from orchestrator.drs.iam import IamPasswordAuth, token_rejected
from orchestrator.errors import CredentialError
from orchestrator.secrets import AUTH_ENV_VARS

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


def resolve_target_credentials(
    env: Mapping[str, str],
    file_values: Mapping[str, str] | None,
    *,
    project_ids: Sequence[str],
    iam_endpoint: str,
    iam_endpoints: Mapping[str, str] | None = None,
    insecure_http: bool = False,
    clock: Clock = utcnow,
    on_token: Callable[[str], None] | None = None,
) -> dict[str, DrsAuth]:
    """One auth per target project (keyed by project id), from the one configured credential source.

    AK/SK serves every project (X-Project-Id per project); IAM password fetches and renews one project-scoped
    token per project (from ``iam_endpoints[project]``, else ``iam_endpoint``; DRS_TEARDOWN_IAM_ENDPOINT wins
    over both); a given token (DRS_TEARDOWN_AUTH_TOKEN) is scoped to one project, so it is refused when the
    targets name more than one, before any call.
    """
    projects = list(dict.fromkeys(p for p in project_ids if p))
    if not projects:
        raise CredentialError("no target project ids to authenticate for")
    endpoints = dict(iam_endpoints or {})
    first = resolve_credentials(env, file_values, project_id=projects[0], region=None,
                                iam_endpoint=endpoints.get(projects[0], iam_endpoint), insecure_http=insecure_http,
                                clock=clock, on_token=on_token)
    if isinstance(first, TokenAuth) and len(projects) > 1:
        raise CredentialError(
            f"DRS_TEARDOWN_AUTH_TOKEN is one project-scoped IAM token, but the targets name {len(projects)} "
            f"projects ({', '.join(projects)}): use IAM password (DRS_TEARDOWN_IAM_USER/_PASSWORD/_DOMAIN) or "
            "AK/SK (HUAWEICLOUD_SDK_AK/_SK) credentials, which serve every project"
        )
    auths: dict[str, DrsAuth] = {projects[0]: first}
    for project in projects[1:]:
        endpoint = None
        if isinstance(first, IamPasswordAuth) and project in endpoints and not _Settings(
                env, file_values).get("iam_endpoint"):
            endpoint = check_endpoint_url(endpoints[project], insecure_http=insecure_http, what="IAM endpoint")
        auths[project] = first.for_project(project, iam_endpoint=endpoint)
    return auths


__all__ = [
    "TOKEN_HEADER",
    "UNSIGNED_HEADERS",
    "AkSkAuth",
    "Clock",
    "CredentialKind",
    "DrsAuth",
    "IamPasswordAuth",
    "TokenAuth",
    "resolve_credentials",
    "resolve_target_credentials",
    "token_identity",
    "token_rejected",
    "utcnow",
]
