"""Where and as whom to call DRS, with which knobs: connect, make_client, settings and tuning for a run."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.clock import Clock
from orchestrator.config import Settings
from orchestrator.drs.auth import DrsAuth, resolve_credentials
from orchestrator.drs.client import DrsClient
from orchestrator.drs.endpoints import check_endpoint_url, resolve_endpoints
from orchestrator.drs.pacing import process_pacer
from orchestrator.engine import Tuning
from orchestrator.errors import ConfigError, CredentialError
from orchestrator.selection import Target
from orchestrator.store.schema import Run


@dataclass(frozen=True)
class Connection:
    """Where and as whom to call DRS."""

    endpoint: str
    project_id: str
    auth: httpx.Auth | None
    identity: str
    verify: bool | str = True
    label: str | None = None  # the target's label in a run over several targets
    kind: str | None = None  # the credential source: token, iam-password, aksk


def connect(settings: Settings, env: Mapping[str, str], clock: Clock | None = None, *,
            on_token: Callable[[str], None] | None = None) -> Connection:
    """Resolve endpoint, project and credentials; every problem is a ConfigError naming the setting.

    `on_token` sees each IAM token fetched at run time (the CLI adds it to the log redactor)."""
    endpoints = resolve_endpoints(settings.region, settings.endpoint, settings.iam_endpoint)
    endpoint = check_endpoint_url(endpoints.drs, insecure_http=settings.insecure_http, what="DRS endpoint")
    if not settings.project_id:
        raise ConfigError("no project id: set DRS_TEARDOWN_PROJECT_ID (or [drs] project_id in the config file)")
    auth: DrsAuth = resolve_credentials(env, settings.auth, project_id=settings.project_id,
                                        region=settings.region, iam_endpoint=endpoints.iam,
                                        insecure_http=settings.insecure_http, on_token=on_token)
    verify: bool | str = check_ca_bundle(settings.ca_bundle) if settings.ca_bundle else True
    return Connection(endpoint, settings.project_id, auth, auth.identity, verify, kind=getattr(auth, "kind", None))


def check_ca_bundle(path: str) -> str:
    """The CA bundle as TLS will load it: a regular file of PEM certificates, or a ConfigError naming it."""
    import ssl

    if not os.path.isfile(path):
        raise ConfigError(f"--ca-bundle {path}: " + ("not a regular file" if os.path.exists(path) else "no such file"))
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"--ca-bundle {path}: not a PEM CA bundle ({exc})") from exc
    return path


def settings_for_target(settings: Settings, target: Target) -> Settings:
    """The settings for one target of a run: its region or endpoint and project replace the global ones."""
    return settings.model_copy(update={"project_id": target.project_id, "region": target.region,
                                       "endpoint": target.endpoint})


def connect_targets(settings: Settings, env: Mapping[str, str], targets: Sequence[Target], *,
                    on_token: Callable[[str], None] | None = None) -> list[Connection]:
    """One connection per target, each with its own credential; a single project-scoped token cannot serve
    several projects, so that is refused before any call."""
    conns = [_labelled(connect(settings_for_target(settings, t), env, on_token=on_token), t.label)
             for t in targets]
    projects = {c.project_id for c in conns}
    if len(projects) > 1 and any(c.kind == "token" for c in conns):
        raise CredentialError(
            f"DRS_TEARDOWN_AUTH_TOKEN is an IAM token scoped to one project, but the targets name "
            f"{len(projects)} projects: use AK/SK (HUAWEICLOUD_SDK_AK/_SK) or IAM password auth "
            "(DRS_TEARDOWN_IAM_USER/_PASSWORD/_DOMAIN), which fetch one token per project; nothing was sent")
    return conns


def _labelled(conn: Connection, label: str) -> Connection:
    return Connection(conn.endpoint, conn.project_id, conn.auth, conn.identity, conn.verify, label, conn.kind)


def make_client(conn: Connection, settings: Settings, clock: Clock) -> DrsClient:
    """A client for one connection: the process's pacing budget, the settings' concurrency and language."""
    return DrsClient(conn.endpoint, conn.project_id, auth=conn.auth, verify=conn.verify, clock=clock,
                     pacer=process_pacer(clock, settings.rate, key=conn.endpoint),
                     max_concurrency=settings.concurrency,
                     language=settings.language)


def settings_for_run(settings: Settings, run: Run) -> Settings:
    """Settings to continue `run` with: its project, endpoint (unless a region is set), ticket and reason fill in
    whatever the flags, environment and config file leave unset."""
    return settings.model_copy(update={
        "project_id": settings.project_id or run.project_id,
        "endpoint": settings.endpoint or (None if settings.region else run.endpoint),
        "ticket": settings.ticket or run.ticket, "reason": settings.reason or run.reason})


def tuning_from(settings: Settings) -> Tuning:
    if settings.force and settings.no_force:
        raise ConfigError("--force and --no-force contradict each other: give one")
    return Tuning(batch_size=settings.batch_size, poll_interval=settings.poll_interval,
                  max_poll_interval=max(settings.poll_interval, min(60.0, settings.poll_interval * 12)),
                  stop_timeout=settings.stop_timeout, delete_timeout=settings.delete_timeout,
                  timeout=settings.timeout, force=settings.force, no_force=settings.no_force,
                  breakpoint=settings.record_breakpoint, claim_size=settings.claim_size,
                  lease_seconds=settings.lease_seconds, unsubscribe_prepaid=settings.unsubscribe_prepaid)


def tuning_for_run(settings: Settings, run_options: Mapping[str, Any], flags: Mapping[str, Any]) -> Tuning:
    """A resumed run keeps its recorded tuning; flags given now override it."""
    fields = Tuning.__dataclass_fields__
    base = Tuning(**{k: v for k, v in run_options.items() if k in fields})
    over = tuning_from(settings)
    changes = {k: getattr(over, k) for k in fields
               if k in flags or (k == "breakpoint" and "record_breakpoint" in flags)}
    return Tuning(**{**base.to_dict(), **changes})
