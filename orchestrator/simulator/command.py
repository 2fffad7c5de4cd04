"""`simulator serve`: the DRS simulator as a standalone HTTP server (attached to the main CLI as a group)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import click

from .core import DEFAULT_PROJECT_ID, Simulator
from .profiles import load_profile


def _credentials_from_env() -> tuple[dict[str, str], dict[str, str], set[tuple[str, str, str]]]:
    """AK/SK (the SDK's variable names) and an IAM user (the orchestrator's): one environment serves both."""
    aksk: dict[str, str] = {}
    security: dict[str, str] = {}
    ak, sk = os.environ.get("HUAWEICLOUD_SDK_AK"), os.environ.get("HUAWEICLOUD_SDK_SK")
    if ak and sk:
        aksk[ak] = sk
        token = os.environ.get("HUAWEICLOUD_SDK_SECURITY_TOKEN")
        if token:
            security[ak] = token
    users: set[tuple[str, str, str]] = set()
    user, password = os.environ.get("DRS_TEARDOWN_IAM_USER"), os.environ.get("DRS_TEARDOWN_IAM_PASSWORD")
    if user and password:
        users.add((user, password, os.environ.get("DRS_TEARDOWN_IAM_DOMAIN") or user))
    return aksk, security, users


@click.group(name="simulator", context_settings={"help_option_names": ["-h", "--help"]})
def simulator_group() -> None:
    """The DRS simulator: a strict local stand-in for the DRS v3 API."""


@simulator_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option("--project-id", default=DEFAULT_PROJECT_ID, show_default=True, help="The project id in paths.")
@click.option("--jobs", "jobs", default=40, show_default=True, type=click.IntRange(0), help="Tasks to seed.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same world.")
@click.option(
    "--profile",
    default="calm",
    show_default=True,
    help="Profile name (calm, rough, bench, fast) or a .toml file.",
)
@click.option("--token", "tokens", multiple=True, help="An X-Auth-Token to accept (repeatable).")
@click.option("--job-status", default=None, help="Seed every task in this one status (benchmarks).")
@click.option("--region", default="cn-north-4", show_default=True,
              help="The region this simulator stands for (the project name IAM scopes tokens to).")
@click.option("--project", "projects", multiple=True, metavar="NAME=ID",
              help="Another region's project this IAM knows (repeatable), for tokens scoped to it by name or id.")
def serve(
    host: str,
    port: int,
    project_id: str,
    jobs: int,
    seed: int,
    profile: str,
    tokens: tuple[str, ...],
    job_status: str | None,
    region: str,
    projects: tuple[str, ...],
) -> None:
    """Serve the simulator until SIGINT/SIGTERM (exit 0).

    The first line of stdout is `listening on URL project PROJECT_ID region REGION` (fields split on spaces),
    flushed at once, so a parent process can read the URL and the project id from it. The same server answers
    DRS (/v3/{project_id}/jobs...), IAM (/v3/auth/tokens), BSS (/v2/orders/...) and inspection (/_sim/...).

    Simulators of one account (one per region, each its own process) accept each other's IAM tokens: tokens
    carry signed claims. Give each the other regions' projects with --project NAME=ID so its IAM can scope
    tokens to them.

    AK/SK pairs come from HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK (and HUAWEICLOUD_SDK_SECURITY_TOKEN), an IAM
    user from DRS_TEARDOWN_IAM_USER / _IAM_PASSWORD / _IAM_DOMAIN.

    \b
    Examples:
      drs-teardown simulator serve --port 8080 --jobs 200 --profile rough --token tok-demo
      DRS_TEARDOWN_ENDPOINT=http://127.0.0.1:8080 DRS_TEARDOWN_AUTH_TOKEN=tok-demo \\
        DRS_TEARDOWN_PROJECT_ID=0123456789abcdef0123456789abcdef drs-teardown plan --all
    """
    try:
        loaded = load_profile(profile)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from exc
    aksk, security, users = _credentials_from_env()
    try:
        sim = Simulator(
            project_id=project_id,
            seed=seed,
            jobs=jobs,
            profile=loaded,
            tokens=set(tokens),
            aksk=aksk,
            iam_users=users,
            security_tokens=security,
            job_status=job_status,
            region=region,
        )
        for item in projects:
            name, sep, other_id = item.partition("=")
            if not sep or not name or not other_id:
                raise ValueError(f"--project {item!r}: expected NAME=ID")
            sim.iam.add_project(name.strip(), other_id.strip())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with sim.serve(host, port) as url:
        click.echo(f"listening on {url} project {project_id} region {region}")
        sys.stdout.flush()
        click.echo(
            f"project {project_id}, {len(sim.jobs)} tasks (seed {seed}), profile {loaded.name}; "
            f"inspect at {url}/_sim/jobs",
            err=True,
        )
        while not stop.wait(0.5):
            pass
    click.echo("simulator stopped", err=True)
