"""The teardown commands: plan, run, resume, worker. Each parses, calls orchestrator.usecases, renders."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.logs import LOG_CONTEXT, say_log
from orchestrator.cli.options import (
    SELECTION_KEYS,
    build_selection,
    check_output_file,
    connection_options,
    flags,
    output_option,
    selection_given,
    selection_options,
    tuning_options,
    unsubscribe_option,
    write_output_file,
)
from orchestrator.cli.shell import App, run_async
from orchestrator.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, SelectionError, TeardownError, UsageError

if TYPE_CHECKING:
    import asyncio

    from orchestrator.cli.render import Progress
    from orchestrator.planning import Plan
    from orchestrator.snapshot import Snapshot
    from orchestrator.usecases import RunPlan, RunSummary, Teardown

# Each command imports the use cases (and through them the store, the client, pydantic, SQLAlchemy, httpx) and
# rich when it runs, so `--help` and usage errors start quickly.

PLAN_HELP = """Read-only: what would happen to each selected task, and why.

\b
Examples:
  drs-teardown plan --all
  drs-teardown plan --name 'legacy-*' --db-use-type sync -o plan.json
  drs-teardown plan --jobs-file decommission.txt --output json
  drs-teardown plan --targets estate.toml
"""

RUN_HELP = """Plan, then execute: stop, poll, delete. Without --yes: a dry run, unless you confirm at a terminal.

\b
Examples:
  drs-teardown run --all                       # dry run (or confirm by typing the project id)
  drs-teardown run --jobs-file ids.txt --yes --ticket CHG-1234 --output json
  drs-teardown run --plan plan.json --yes      # refuses (exit 2) if the live state drifted
  drs-teardown run --targets estate.toml --yes --max-targets 500
"""


def _progress(app: App, every: float) -> Progress:
    from orchestrator.cli.render import LogProgress, Progress

    if app.log_format == "json":
        return LogProgress(say_log, interval=every)

    live = app.output == "text" and app.err.is_terminal
    return Progress(app.err, live=live, interval=every)


def _with_progress(app: App, every: float,
                   execute: Callable[[Callable[[Snapshot], None], asyncio.Event], Awaitable[RunSummary]]) -> RunSummary:
    """Run `execute(progress, stop)` under the signal-aware runner with the progress renderer."""

    async def go(stop: asyncio.Event) -> RunSummary:
        with _progress(app, every) as progress:
            return await execute(progress, stop)

    return run_async(app, go)


def finish(app: App, summary: RunSummary) -> int:
    """The run's result: the document (json) or the table (text) on stdout; the exit code is the document's."""
    from orchestrator.cli.render import counts_line, summary_table

    if app.output == "json":
        app.emit(summary.to_json())
    else:
        app.out.print(summary_table(summary.jobs))
        for t in summary.targets:
            app.out.print(f"target {t['label']} (project {t['project_id']}): ", counts_line(t["counts"]))
        app.say(f"run {summary.run_id}: exit {summary.exit_code}")
        if summary.exit_code == EXIT_INTERRUPTED:
            app.say(f"interrupted: continue with `drs-teardown resume {summary.run_id}`")
    return summary.exit_code


def _nothing(app: App, message: str) -> int:
    """An empty match: said, no run recorded, exit 0."""
    if app.output == "json":
        app.emit({"selected": 0, "message": message, "exit_code": EXIT_OK, "counts": {}, "jobs": []})
    else:
        app.say(message)
    return EXIT_OK


def _show_plan(app: App, run_plan: RunPlan, *, to_stderr: bool = False) -> None:
    from orchestrator.cli.render import counts_line, plan_table

    console = app.err if to_stderr else app.out
    for part in run_plan.parts:
        console.print(plan_table(part.plan))
        if run_plan.several:
            console.print(f"target {part.target.label}: ", counts_line(part.plan.counts()))
            if part.error:
                console.print(f"target {part.target.label}: {part.error}")
    if run_plan.several:  # (one target: the table's caption has the counts already)
        console.print("all targets: ", counts_line(run_plan.counts()))


def _teardown(app: App, kw: dict[str, Any], *, targets_file: str | None, max_targets: int | None,
              missing_ok: bool, reviewed: Plan | None = None, reviewed_source: str = "",
              consent: str | None = None, with_store: bool = False) -> Teardown:
    from orchestrator.selection import parse_targets_file
    from orchestrator.usecases import Teardown

    sel_kw = {k: kw.pop(k) for k in SELECTION_KEYS}
    targets = None
    selection = None
    if targets_file:
        if selection_given(sel_kw):
            raise UsageError("--targets names each target's selection: give no ids or filters with it")
        targets = parse_targets_file(targets_file)
    elif reviewed is None:
        selection = build_selection(sel_kw)
    settings = app.settings(**flags(max_targets=max_targets, **kw))
    return Teardown(settings, app.env, selection=selection, targets=targets, reviewed=reviewed,
                    reviewed_source=reviewed_source, consent=consent, missing_ok=missing_ok,
                    on_token=app.redactor.add, store=app.store(settings) if with_store else None)


@click.command(help=PLAN_HELP)
@selection_options
@connection_options
@unsubscribe_option
@click.option("-o", "--out", "out", metavar="FILE", help="save the plan artifact (JSON + hash); - for stdout")
@output_option
@click.pass_obj
def plan(app: App, out: str | None, output: str, max_targets: int | None, targets_file: str | None,
         missing_ok: bool, **kw: Any) -> int:
    check_output_file(out, "-o")
    td = _teardown(app, kw, targets_file=targets_file, max_targets=max_targets, missing_ok=missing_ok)
    run_plan = run_async(app, lambda stop: td.plan(stop, record=False, check=False))
    empty = run_plan.nothing_matched()
    if empty:
        return _nothing(app, empty)
    doc = run_plan.to_json()
    if out and out != "-":
        write_output_file(out, json.dumps(doc, indent=2) + "\n", "-o")
    refusal: TeardownError | None = None
    try:
        td.check(run_plan)  # --max-targets: exit 2 after showing the plan
    except TeardownError as exc:
        refusal = exc
    # A target that could not be planned leaves the plan incomplete: exit 3, its error in the document.
    code = EXIT_INCOMPLETE if run_plan.failed else EXIT_OK
    if output == "json" and refusal is not None:
        refusal.document = doc  # type: ignore[attr-defined]  # the plan, with the error and its exit code
    elif output == "json" or out == "-":
        app.emit({**doc, "exit_code": refusal.exit_code if refusal is not None else code})
    if output == "text":
        _show_plan(app, run_plan, to_stderr=out == "-")
        for label, why in run_plan.failed.items():
            app.say(f"target {label} could not be planned: {why}")
        app.say(f"plan hash {run_plan.hash}" + (f" saved to {out}" if out and out != "-" else ""))
    if refusal is not None:
        raise refusal
    return code


PLAN_FILE_CAP = 64 * 1024 * 1024  # bytes: a 100,000-task plan is about 40 MiB


def _load_reviewed(path: str) -> Plan:
    from orchestrator.planning import load_plan

    file = Path(path)
    if not file.is_file():
        raise SelectionError(f"--plan {path}: no such file" if not file.exists() else f"--plan {path}: not a file")
    try:
        with file.open("rb") as fh:
            data = fh.read(PLAN_FILE_CAP + 1)
    except OSError as exc:
        raise SelectionError(f"--plan {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > PLAN_FILE_CAP:
        raise SelectionError(f"--plan {path}: larger than {PLAN_FILE_CAP >> 20} MiB; nothing was sent")
    try:
        return load_plan(json.loads(data.decode("utf-8")), path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SelectionError(f"--plan {path}: not JSON ({exc})") from exc


@click.command(help=RUN_HELP)
@selection_options
@connection_options
@tuning_options
@click.option("--yes", is_flag=True, help="consent for pipelines: execute without asking (recorded in the trail)")
@click.option("--plan", "plan_file", metavar="FILE",
              help="execute this reviewed plan; refuses (exit 2) if the live state drifted")
@output_option
@click.pass_obj
def run(app: App, yes: bool, plan_file: str | None, output: str, max_targets: int | None,
        targets_file: str | None, missing_ok: bool, **kw: Any) -> int:
    reviewed = None
    if plan_file:
        if selection_given({k: kw[k] for k in SELECTION_KEYS}) or targets_file:
            raise UsageError("--plan takes its selection from the plan file: give no ids or filters")
        reviewed = _load_reviewed(plan_file)
    consent = ("plan-file+yes-flag" if reviewed else "yes-flag") if yes else None
    td = _teardown(app, kw, targets_file=targets_file, max_targets=max_targets, missing_ok=missing_ok,
                   reviewed=reviewed, reviewed_source=plan_file or "", consent=consent, with_store=True)
    from orchestrator.usecases import can_pipeline

    if can_pipeline(td):
        return _pipelined(app, td)
    run_plan = run_async(app, td.plan)
    empty = run_plan.nothing_matched()
    if empty:
        return _nothing(app, empty)
    consent = consent or _ask(app, run_plan, reviewed=reviewed is not None)
    run_id = td.record(consent)
    assert td.ctx is not None
    LOG_CONTEXT.set({"run_id": run_id, "worker": td.ctx.worker})
    app.say(f"run {run_id}: {len(run_plan.items)} task(s); consent: {consent}")
    return finish(app, _with_progress(app, td.settings.progress_interval,
                                      lambda progress, stop: td.execute(progress=progress, stop_event=stop)))


def _pipelined(app: App, td: Teardown) -> int:
    """`run --yes` without --plan: the plan pipelined into the run (stops go out while the plan still reads)."""
    from orchestrator.usecases import pipelined

    def recorded(run_id: str) -> None:
        assert td.ctx is not None
        LOG_CONTEXT.set({"run_id": run_id, "worker": td.ctx.worker})

    def opened(run_id: str) -> None:  # (an empty match removes the run again: it is not named)
        app.say(f"run {run_id}: planning and executing; consent: {td.consent}")

    summary = _with_progress(app, td.settings.progress_interval, lambda progress, stop: pipelined(
        td, progress=progress, stop_event=stop, on_recorded=recorded, on_opened=opened))
    empty = td.run_plan.nothing_matched() if td.run_plan is not None else None
    if empty and not summary.jobs:
        return _nothing(app, empty)
    return finish(app, summary)


def _ask(app: App, run_plan: RunPlan, *, reviewed: bool) -> str:
    """Consent at a terminal (typing every project id), else a dry run: refused, exit 2, nothing sent."""
    from orchestrator.usecases import refused

    if app.output == "text":
        _show_plan(app, run_plan)
    actionable = sum(1 for i in run_plan.items if i.action.value in ("stop_then_delete", "delete", "wait",
                                                                      "unsubscribe_then_delete"))
    projects = list(dict.fromkeys(run_plan.project_ids))
    orders = sorted({i.order_id for i in run_plan.items if i.action.value == "unsubscribe_then_delete" and i.order_id})
    if sys.stdin.isatty() and app.err.is_terminal and app.output == "text":
        if orders:
            app.say(f"BILLING ACTION: --unsubscribe-prepaid unsubscribes {len(orders)} yearly/monthly order(s): "
                    f"{', '.join(orders)}")
        typed = click.prompt(f"This stops and deletes up to {actionable} task(s) in project(s) "
                             f"{', '.join(projects)}. Type the project id{'s' if len(projects) > 1 else ''} "
                             f"({' '.join(projects)}) to confirm", default="", show_default=False, err=True)
        if sorted(typed.replace(",", " ").split()) == sorted(projects):
            return "typed-project-id" + ("+plan-file" if reviewed else "")
        raise refused("refused: the project id did not match; nothing was sent")
    message = "dry run: nothing was sent. Pass --yes to execute (or confirm at a terminal)."
    raise refused(message, {**run_plan.to_json(), "dry_run": True, "message": message})


@click.command()
@click.argument("run_id", required=False)
@connection_options
@tuning_options
@output_option
@click.pass_obj
def resume(app: App, run_id: str | None, output: str, **kw: Any) -> int:
    """Continue an interrupted run (default: the latest unfinished one), reconciling intents first.

    \b
    Examples:
      drs-teardown resume
      drs-teardown resume 3f2a9c1e --output json
    """
    from orchestrator.usecases import pick_run, prepare_resume, summarize, timed_out_ids

    given = flags(**kw)
    settings = app.settings(**given)
    store = app.store(settings)
    run = pick_run(store, run_id)
    if run is None:
        message = "nothing to resume: every run is finished"
        if app.output == "json":
            app.emit({"run_id": None, "exit_code": EXIT_OK, "message": message})
        else:
            app.say(message)
        return EXIT_OK
    timed_out = timed_out_ids(store, run.id)
    if run.status == "finished" and not timed_out:
        return finish(app, summarize(store, run.id))
    resumption = prepare_resume(store, run, settings, app.env, given, on_token=app.redactor.add)
    LOG_CONTEXT.set({"run_id": run.id, "worker": resumption.ctx.worker})
    app.say(f"resuming run {run.id} ({run.status}"
            + (f"; {len(timed_out)} timed-out task(s) re-opened, each read before acting" if timed_out else "") + ")")
    return finish(app, _with_progress(app, resumption.settings.progress_interval,
                                      lambda progress, stop: resumption.execute(progress=progress, stop_event=stop)))


@click.command()
@click.argument("run_id", required=False)
@connection_options
@tuning_options
@click.option("--wait-for-runs", type=click.FloatRange(0), default=0.0, show_default=True,
              help="with nothing to do, wait up to this many seconds for a run to appear")
@output_option
@click.pass_obj
def worker(app: App, run_id: str | None, output: str, wait_for_runs: float, **kw: Any) -> int:
    """Join unfinished runs as an extra worker (PostgreSQL); exits when nothing is left.

    \b
    Examples:
      drs-teardown --db postgresql+psycopg://teardown@db/teardown worker
      drs-teardown worker --wait-for-runs 30 --output json
    """
    from orchestrator.usecases import work_runs

    given = flags(**kw)
    settings = app.settings(**given)
    store = app.store(settings)
    result = run_async(app, lambda stop: work_runs(store, settings, app.env, given, run_id, stop_event=stop,
                                                   wait_for_runs=wait_for_runs, say=app.say,
                                                   on_token=app.redactor.add))
    if app.output == "json":
        app.emit(result.to_json())
    return result.exit_code
