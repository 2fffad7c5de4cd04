"""The evidence commands: status, audit, verify, report. Results on stdout; every one takes --output."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import check_output_file, output_option, write_output_file
from orchestrator.cli.shell import App
from orchestrator.errors import EXIT_ERROR, EXIT_OK, EXIT_STORE, StoreError, UsageError

if TYPE_CHECKING:
    from orchestrator.store.repo import Store

# Each command imports the store, the use cases, the report and rich when it runs (a quick `--help`).


@click.command()
@click.argument("run_id", required=False)
@output_option
@click.pass_obj
def status(app: App, run_id: str | None, output: str) -> int:
    """Runs, or one run's tasks with local state and last remote status.

    \b
    Examples:
      drs-teardown status
      drs-teardown status 3f2a9c1e --output json | jq '.jobs[] | select(.outcome == "blocked")'
    """
    from orchestrator.cli.render import runs_table, summary_table
    from orchestrator.usecases import find_run, summarize

    store = _evidence(app)
    if not run_id:
        runs = store.runs() if store is not None else []
        seen = {r.id: store.run_status(r) for r in runs}  # running only while its owner is alive
        for r in runs:
            r.status = seen[r.id].status  # shown, never written: the store is open read-only
        if output == "json":
            app.emit({"exit_code": EXIT_OK, "runs": [
                {"run_id": r.id, "created_at": r.created_at.isoformat(), "status": r.status,
                 "exit_code": r.exit_code, "project_id": r.project_id, "ticket": r.ticket, "consent": r.consent,
                 **({"detail": seen[r.id].detail} if seen[r.id].detail else {})}
                for r in runs]})
        else:
            none = "no runs yet" if store is not None else f"no runs yet: there is no database at {app.settings().db}"
            app.out.print(runs_table(runs) if runs else none, markup=False)
            for r in runs:  # who held a dead run, and since when
                if seen[r.id].detail:
                    app.out.print(f"run {r.id}: {seen[r.id].detail}", markup=False)
        return EXIT_OK
    run = find_run(store, run_id)
    summary = summarize(store, run.id)
    seen = store.run_status(run)
    if seen.status == "finished" and summary.counts.get("timed_out"):
        seen = dataclasses.replace(seen, detail=f"{summary.counts['timed_out']} task(s) timed out; resumable: "
                                                f"drs-teardown resume {run.id}")
    if output == "json":
        # The document's exit_code is this command's (0: the run was read); the run's own is run_exit_code.
        doc = summary.to_json()
        doc["run_exit_code"], doc["exit_code"] = doc["exit_code"], EXIT_OK
        app.emit({**doc, "status": seen.status, **({"detail": seen.detail} if seen.detail else {})})
        return EXIT_OK
    app.out.print(f"run {run.id} ({seen.status}{': ' + seen.detail if seen.detail else ''}), "
                  f"project {run.project_id}, "
                  f"created {run.created_at:%Y-%m-%d %H:%M:%S}", markup=False)
    app.out.print(summary_table(summary.jobs, limit=10_000))
    return EXIT_OK


@click.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="the export's format (text output)")
@output_option
@click.pass_obj
def audit(app: App, run_id: str, fmt: str, output: str) -> int:
    """The transition trail of a run, on stdout.

    \b
    Examples:
      drs-teardown audit 3f2a9c1e
      drs-teardown audit 3f2a9c1e --format csv > trail.csv
      drs-teardown audit 3f2a9c1e --output json
    """
    from orchestrator.report import audit_rows, export_audit
    from orchestrator.usecases import find_run

    store = app.store(app.settings(), read_only=True)
    run = find_run(store, run_id)
    if output == "json":
        app.emit({"run_id": run.id, "exit_code": EXIT_OK, "records": audit_rows(store, run.id)})
    else:
        click.echo(export_audit(store, run.id, fmt), nl=False)
    return EXIT_OK


@click.command()
@click.argument("run_id", required=False)
@click.option("--expect-head", help="also require this head hash (anchored elsewhere, e.g. in the ticket)")
@output_option
@click.pass_obj
def verify(app: App, run_id: str | None, expect_head: str | None, output: str) -> int:
    """Recompute the audit hash chain; exit 4 on any tampering, naming the first broken record.

    \b
    Examples:
      drs-teardown verify
      drs-teardown verify 3f2a9c1e --expect-head 9b1c…  > verdict.txt
    """
    if expect_head and not run_id:
        raise UsageError("--expect-head needs a RUN_ID")
    from rich.markup import escape

    from orchestrator.usecases import find_run

    store = _evidence(app)
    if store is None and run_id:
        raise UsageError(f"no run {run_id!r}: there is no database at {app.settings().db}")
    runs = [] if store is None else [find_run(store, run_id)] if run_id else store.runs(limit=10_000)
    results = [store.verify(r.id) for r in runs] if store is not None else []
    head_ok = expect_head is None or (len(results) == 1 and results[0].head_hash == expect_head.lower())
    ok = bool(results) and all(v.ok for v in results) and head_ok
    code = EXIT_OK if ok else (EXIT_ERROR if not results else EXIT_STORE)
    if output == "json":
        app.emit({"ok": ok, "exit_code": code, "runs": [v.__dict__ for v in results],
                  **({"expected_head": expect_head, "head_matches": head_ok} if expect_head else {}),
                  **({"message": "nothing to verify: the store has no runs"} if not results else {})})
        return code
    for v in results:
        if v.ok:
            app.out.print(f"[green]ok[/green] run {v.run_id}: {v.records} records, head {v.head_hash}")
        else:
            app.out.print(f"[red]BROKEN[/red] run {v.run_id}: first broken record seq {v.broken_seq}: "
                          f"{escape(v.problem or '')}")
    if not head_ok:
        app.out.print(f"HEAD MISMATCH: expected {expect_head}, the trail ends at {results[0].head_hash}: "
                      "records after the anchor were rewritten or added", markup=False)
    if not results:
        app.out.print("nothing to verify: the store has no runs", markup=False)
    return code


@click.command()
@click.argument("run_id")
@click.option("--html", "html_file", metavar="FILE", required=True, help="where to write it; - for stdout")
@output_option
@click.pass_obj
def report(app: App, run_id: str, html_file: str, output: str) -> int:
    """A self-contained HTML report with a timeline; exit 4 (report still written) when the chain is broken.

    \b
    Examples:
      drs-teardown report 3f2a9c1e --html report.html
      drs-teardown report 3f2a9c1e --html - > report.html
    """
    if html_file == "-" and output == "json":
        raise UsageError("--html - writes the report to stdout, where --output json puts its document: pick one")
    check_output_file(html_file, "--html")
    from orchestrator.report import render_html
    from orchestrator.usecases import find_run

    store = app.store(app.settings(), read_only=True)
    run = find_run(store, run_id)
    rendered = render_html(store, run.id)
    html, verified = rendered.html, rendered.ok
    code = EXIT_OK if verified else EXIT_STORE
    if html_file == "-":
        click.echo(html, nl=False)
    else:
        write_output_file(html_file, html, "--html")
        app.say(f"wrote {html_file}" + ("" if verified else " (the audit chain is BROKEN: see its banner)"))
    if output == "json":
        app.emit({"run_id": run.id, "html": html_file, "chain_ok": verified, "exit_code": code})
    return code


def _evidence(app: App) -> Store | None:
    """The store, opened read-only; None when there is no database at all (nothing recorded yet)."""
    try:
        return app.store(app.settings(), read_only=True)
    except StoreError as exc:
        if exc.message.startswith("no database file"):
            return None
        raise
