"""Option groups shared by the commands, and the checks of what they name (files, selections)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orchestrator.drs.codes import ALL_STATUSES
from orchestrator.errors import SelectionError, UsageError

if TYPE_CHECKING:
    from orchestrator.selection import Selection

F = TypeVar("F", bound=Callable[..., Any])
SELECTION_KEYS = ("job_ids", "jobs_file", "select_all", "name_glob", "status", "db_use_type", "engine_type", "tags")


def _apply(fn: F, options: list[Callable[[F], F]]) -> F:
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def output_option(fn: F) -> F:
    def set_output(ctx: click.Context, _param: click.Parameter, value: str) -> str:
        if ctx.obj is not None:
            ctx.obj.output = value
        return value

    return click.option("--output", "output", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, callback=set_output, is_eager=True,
                        help="text for people; json for pipelines (exactly one document on stdout)")(fn)


def connection_options(fn: F) -> F:
    return _apply(fn, [
        click.option("--endpoint", help="DRS endpoint URL (else from --region; env DRS_TEARDOWN_ENDPOINT)"),
        click.option("--project-id", help="the region's project id (env DRS_TEARDOWN_PROJECT_ID)"),
        click.option("--region", help="e.g. cn-north-4 (env DRS_TEARDOWN_REGION)"),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="CA bundle for TLS"),
        click.option("--insecure-http", is_flag=True, default=None,
                     help="allow plain http:// to a non-loopback endpoint (never needed for the simulator)"),
        click.option("--rate", type=click.FloatRange(0.01),
                     help="calls per second per API (default 180; the gateway allows 200)"),
        click.option("--concurrency", type=click.IntRange(1, 256), help="requests in flight at once (default 16)"),
        click.option("--bss-site", type=click.Choice(["cn", "intl"]),
                     help="the billing (BSS) site for --unsubscribe-prepaid: cn (bss.myhuaweicloud.com) or intl "
                          "(bss-intl.myhuaweicloud.com); env DRS_TEARDOWN_BSS_ENDPOINT gives a URL instead"),
    ])


def unsubscribe_option(fn: F) -> F:
    """--unsubscribe-prepaid, on plan (to review what it would do) and on run/resume/worker (to do it)."""
    return click.option("--unsubscribe-prepaid", is_flag=True, default=None,
                        help="yearly/monthly tasks: unsubscribe their order through BSS (a billing action, part of "
                             "the consent), wait for the release without terminate, then delete")(fn)


def tuning_options(fn: F) -> F:
    return _apply(fn, [
        click.option("--batch-size", type=click.IntRange(1, 1000), help="ids per batch-jobs call (default 100)"),
        click.option("--poll-interval", type=click.FloatRange(0.01), help="base poll interval in seconds (default 5)"),
        click.option("--stop-timeout", type=click.FloatRange(0.01), help="seconds a task may take to stop (1800)"),
        click.option("--delete-timeout", type=click.FloatRange(0.01), help="seconds a delete may take (600)"),
        click.option("--timeout", type=click.FloatRange(0.01), help="seconds for the whole run (21600)"),
        click.option("--no-force", is_flag=True, default=None, help="never escalate to force_terminate"),
        click.option("--force", is_flag=True, default=None, help="force_terminate from the start"),
        click.option("--record-breakpoint", is_flag=True, default=None,
                     help="send is_show_breakpoint_position with each stop, and record each task's gtid and "
                          "incre_start_position before its delete"),
        unsubscribe_option,
        click.option("--claim-size", type=click.IntRange(1),
                     help="tasks a worker claims at a time on PostgreSQL (default 100)"),
        click.option("--lease-seconds", type=click.FloatRange(1.0), hidden=True,
                     help="a dead worker's tasks are taken over after this (default 30)"),
        click.option("--ticket", help="change ticket, recorded on every audit record (at most 255 characters)"),
        click.option("--reason", help="why, recorded on every audit record (at most 4096 characters)"),
    ])


def _status(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from orchestrator.selection import normalise_status  # on use: selection loads pydantic (drs.models)

    value = normalise_status(value)
    if value and value not in ALL_STATUSES:
        raise click.BadParameter(f"--status {value!r} is not a DRS task status; valid (any case): "
                                 f"{', '.join(ALL_STATUSES)}")
    return value


def selection_options(fn: F) -> F:
    return _apply(fn, [
        click.argument("job_ids", nargs=-1),
        click.option("--jobs-file", metavar="FILE", help="one job id per line, # comments, - for stdin (≤ 8 MiB)"),
        click.option("--all", "select_all", is_flag=True, help="every task of the project"),
        click.option("--name", "name_glob", help="task name glob, e.g. 'legacy-*'"),
        click.option("--status", callback=_status, help="only tasks in this DRS status (any case)"),
        click.option("--db-use-type", type=click.Choice(["migration", "sync", "cloudDataGuard"])),
        click.option("--engine-type", help="e.g. mysql"),
        click.option("--tag", "tags", multiple=True, help="KEY=VALUE; repeatable (all must match)"),
        click.option("--targets", "targets_file", metavar="FILE",
                     help="TOML file of [[target]] tables: one run over several projects/regions"),
        click.option("--max-targets", type=click.IntRange(1), help="refuse (exit 2) when more tasks are selected"),
        click.option("--missing-ok", is_flag=True,
                     help="an explicit id that is not found does not fail the run (recorded)"),
    ])


def selection_given(kw: dict[str, Any]) -> bool:
    return bool(kw["job_ids"] or kw["jobs_file"] or kw["select_all"]
                or any(kw[k] for k in ("name_glob", "status", "db_use_type", "engine_type", "tags")))


def build_selection(kw: dict[str, Any]) -> Selection:
    """The selection from the options; every malformed id or line is reported at once."""
    from orchestrator.selection import Selection, parse_job_ids, parse_tag, read_jobs_file

    problems: list[str] = []
    ids: list[str] = []
    try:
        ids = parse_job_ids(kw["job_ids"])
    except SelectionError as exc:
        problems.append(str(exc))
    if kw["jobs_file"] is not None:
        try:
            ids += [i for i in read_jobs_file(kw["jobs_file"]) if i not in ids]
        except SelectionError as exc:
            problems.append(str(exc))
    if problems:
        raise SelectionError("\n".join(problems))
    sel = Selection(job_ids=tuple(ids), all=kw["select_all"], name_glob=kw["name_glob"], status=kw["status"],
                    db_use_type=kw["db_use_type"], engine_type=kw["engine_type"],
                    tags=tuple(parse_tag(t) for t in kw["tags"]))
    sel.validate()
    return sel


def check_output_file(path: str | None, flag: str) -> None:
    """Before any API call: the file can be written (its folder exists and is writable). `-` is stdout."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name (or - for stdout)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: the file is not writable")
    if not target.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {folder} (permission denied or read-only)")


def write_output_file(path: str, text: str, flag: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write it ({exc.strerror})") from exc


def flags(**kw: Any) -> dict[str, Any]:
    """The options actually given (None: not given, so the environment or config file decides)."""
    return {k: v for k, v in kw.items() if v is not None}
