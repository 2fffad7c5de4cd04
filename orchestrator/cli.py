"""The command line: parse, call orchestrator.api, render. Progress and logs on stderr; JSON on stdout."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.config import Settings, load_settings
from orchestrator.drs.client import DrsClient
from orchestrator.engine import Tuning, actor_info, new_worker_id, start_run
from orchestrator.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORE,
    ConfigError,
    CredentialError,
    DrsError,
    EngineAbort,
    SelectionError,
    StoreError,
)
from orchestrator.lifecycle import TERMINAL
from orchestrator.planning import Plan, Selection, drift, load_plan, parse_job_ids, parse_tag
from orchestrator.render import Progress, counts_line, plan_table, runs_table, summary_table
from orchestrator.secrets import SecretRedactingFilter, collect_secrets, refuse_secret_in_argv
from orchestrator.store.repo import Context, Store
from orchestrator.version import __version__
from orchestrator.wire import Exchange

F = TypeVar("F", bound=Callable[..., Any])


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
log = logging.getLogger("drs_teardown")


class Exit(Exception):
    """Leave with a code and a message (already rendered or to render)."""

    def __init__(self, code: int, message: str | None = None, *, emitted: bool = False) -> None:
        super().__init__(message or "")
        self.code = code
        self.message = message
        self.emitted = emitted  # the JSON document is already on stdout


class App:
    """What the global options say, shared by every command."""

    def __init__(self, config: str | None, db: str | None, verbose: int) -> None:
        self.config = config
        self.db = db
        self.verbose = verbose
        self.env = dict(os.environ)
        self.err = Console(stderr=True, highlight=False)
        if not self.err.is_terminal:
            # Logs and CI: never wrap a message mid-path; tables get room.
            self.err = Console(stderr=True, highlight=False, soft_wrap=True, width=160)
        self.output = "text"
        self.redactor: SecretRedactingFilter | None = None

    def connect(self, settings: Settings) -> api.Connection:
        """Resolve the connection; secrets from the config file and fetched IAM tokens join the log filter."""
        if self.redactor is not None:
            for secret in collect_secrets({}, settings.auth):
                self.redactor.add(secret)
        return api.connect(settings, self.env, on_token=self.redactor.add if self.redactor else None)

    def settings(self, **flags: Any) -> Settings:
        return load_settings(self.config, self.env, {"db": self.db, **flags})

    def store(self, settings: Settings) -> Store:
        return Store(settings.db)

    def emit(self, doc: dict[str, Any]) -> None:
        """The one JSON document on stdout."""
        click.echo(json.dumps(doc, indent=2, default=str))


def _setup_logging(verbose: int, env: dict[str, str], auth_file: dict[str, str] | None = None) -> SecretRedactingFilter:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redactor = SecretRedactingFilter(collect_secrets(env, auth_file))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    # httpx logs the request line only (no headers) at INFO; our client logs masked headers at DEBUG.
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("httpcore", "transitions", "alembic", "sqlalchemy", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor


def handle_errors(fn: F) -> F:
    """Turn every user-caused error into a clear message and the contract's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app: App = click.get_current_context().obj
        try:
            return fn(*args, **kwargs)
        except Exit as exc:
            _fail(app, exc.code, exc.message, emitted=exc.emitted)
        except (ConfigError, CredentialError, SelectionError) as exc:
            _fail(app, EXIT_ERROR, str(exc))
        except StoreError as exc:
            _fail(app, EXIT_STORE, f"store: {exc}")
        except EngineAbort as exc:
            _fail(app, exc.exit_code, f"{exc} (the run is resumable: drs-teardown resume)")
        except DrsError as exc:
            _fail(app, EXIT_ERROR, f"DRS: {exc.message}")
        except KeyboardInterrupt:
            _fail(app, EXIT_INTERRUPTED, "interrupted")

    return wrapper  # type: ignore[return-value]


def _fail(app: App, code: int, message: str | None, *, emitted: bool = False) -> NoReturn:
    if message:
        if code in (0, 2):
            app.err.print(message, markup=False)
        else:
            app.err.print(f"[red]error:[/red] {_escape(message)}")
        if app.output == "json" and not emitted:
            app.emit({"error": message, "exit_code": code})
    sys.exit(code)


def output_option(fn: F) -> F:
    def set_output(ctx: click.Context, _param: click.Parameter, value: str) -> str:
        ctx.ensure_object(App)
        if ctx.obj is not None:
            ctx.obj.output = value
        return value

    return click.option("--output", "output", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, callback=set_output, is_eager=True,
                        help="text for people (stderr progress), json for pipelines (one document on stdout)")(fn)


def connection_options(fn: F) -> F:
    for opt in reversed([
        click.option("--endpoint", help="DRS endpoint URL (else from --region; env DRS_TEARDOWN_ENDPOINT)"),
        click.option("--project-id", help="the region's project id (env DRS_TEARDOWN_PROJECT_ID)"),
        click.option("--region", help="e.g. cn-north-4 (env DRS_TEARDOWN_REGION)"),
        click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="CA bundle for TLS"),
        click.option("--insecure-http", is_flag=True, default=None,
                     help="allow plain http:// to a non-loopback endpoint (never needed for the simulator)"),
        click.option("--rate", type=float, help="calls per second per API (default 180; the gateway allows 200)"),
        click.option("--concurrency", type=int, help="requests in flight at once (default 16)"),
    ]):
        fn = opt(fn)
    return fn


def tuning_options(fn: F) -> F:
    for opt in reversed([
        click.option("--batch-size", type=click.IntRange(1, 1000), help="ids per batch-jobs call (default 100)"),
        click.option("--poll-interval", type=click.FloatRange(0.01), help="base poll interval in seconds (default 5)"),
        click.option("--stop-timeout", type=click.FloatRange(0.01), help="seconds a task may take to stop (1800)"),
        click.option("--delete-timeout", type=click.FloatRange(0.01), help="seconds a delete may take (600)"),
        click.option("--timeout", type=click.FloatRange(0.01), help="seconds for the whole run (21600)"),
        click.option("--no-force", is_flag=True, default=None, help="never escalate to force_terminate"),
        click.option("--force", is_flag=True, default=None, help="force_terminate from the start"),
        click.option("--record-breakpoint", is_flag=True, default=None,
                     help="send is_show_breakpoint_position with each stop"),
        click.option("--claim-size", type=click.IntRange(1),
                     help="tasks a worker claims at a time on PostgreSQL (default 100)"),
        click.option("--lease-seconds", type=click.FloatRange(1.0), hidden=True,
                     help="a dead worker's tasks are taken over after this (default 30)"),
        click.option("--ticket", help="change ticket, recorded on every audit record"),
        click.option("--reason", help="why, recorded on every audit record"),
    ]):
        fn = opt(fn)
    return fn


def selection_options(fn: F) -> F:
    for opt in reversed([
        click.argument("job_ids", nargs=-1),
        click.option("--jobs-file", type=click.File("r"), help="one job id per line, # comments, - for stdin"),
        click.option("--all", "select_all", is_flag=True, help="every task of the project"),
        click.option("--name", "name_glob", help="task name glob, e.g. 'legacy-*'"),
        click.option("--status", help="only tasks in this DRS status"),
        click.option("--db-use-type", type=click.Choice(["migration", "sync", "cloudDataGuard"])),
        click.option("--engine-type", help="e.g. mysql"),
        click.option("--tag", "tags", multiple=True, help="KEY=VALUE; repeatable (all must match)"),
        click.option("--max-targets", type=click.IntRange(1), help="refuse (exit 2) when more tasks are selected"),
    ]):
        fn = opt(fn)
    return fn


def _selection(job_ids: tuple[str, ...], jobs_file: Any, select_all: bool, name_glob: str | None,
               status: str | None, db_use_type: str | None, engine_type: str | None,
               tags: tuple[str, ...]) -> Selection:
    ids = parse_job_ids(job_ids)
    if jobs_file is not None:
        source = "stdin" if jobs_file.name == "<stdin>" else jobs_file.name
        ids += [i for i in parse_job_ids(jobs_file.read().splitlines(), source=f"--jobs-file {source}")
                if i not in ids]
    sel = Selection(job_ids=tuple(ids), all=select_all, name_glob=name_glob, status=status,
                    db_use_type=db_use_type, engine_type=engine_type, tags=tuple(parse_tag(t) for t in tags))
    sel.validate()
    return sel


def _flags(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _run_async(app: App, factory: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine with SIGINT/SIGTERM finishing the current step, then stopping (exit 130)."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signame: str) -> None:
            if not stop.is_set():
                app.err.print(f"{signame}: finishing the current step, then stopping (resumable)")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            return await factory(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def _context(settings: Settings, identity: str, worker: str | None = None) -> Context:
    return Context(actor=actor_info(identity), worker=worker or new_worker_id(), ticket=settings.ticket,
                   reason=settings.reason)


def _progress(app: App) -> Progress:
    live = app.output == "text" and app.err.is_terminal
    return Progress(app.err, live=live)


def _finish(app: App, summary: api.RunSummary) -> NoReturn:
    if app.output == "json":
        app.emit(summary.to_json())
    else:
        app.err.print(summary_table(summary.jobs))
        app.err.print(counts_line(summary.counts))
        app.err.print(f"run {summary.run_id}: exit {summary.exit_code}")
        if summary.exit_code == EXIT_INTERRUPTED:
            app.err.print(f"interrupted: continue with `drs-teardown resume {summary.run_id}`")
    sys.exit(summary.exit_code)


# -- the commands -----------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config (default ./drs-teardown.toml if present)")
@click.option("--db", help="database URL (default sqlite:///./drs-teardown.db; env DRS_TEARDOWN_DB)")
@click.option("-v", "--verbose", count=True, help="-v requests and steps, -vv debug (secrets always masked)")
@click.version_option(__version__, prog_name="drs-teardown")
@click.pass_context
def main(ctx: click.Context, config: str | None, db: str | None, verbose: int) -> None:
    """Tear down Huawei Cloud DRS tasks safely and provably: stop, poll, delete behind a state-machine guard,
    every transition in a hash-chained audit trail."""
    ctx.obj = App(config, db, verbose)
    ctx.obj.redactor = _setup_logging(verbose, ctx.obj.env)


@main.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(1, 5000), default=40, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--profile", default="calm", show_default=True, help="simulator profile (name or .toml file)")
@click.option("--poll-interval", type=click.FloatRange(0.01), default=1.0, show_default=True)
@output_option
@click.pass_obj
@handle_errors
def demo(app: App, n_jobs: int, seed: int, profile: str, poll_interval: float, output: str) -> None:
    """The main job on the embedded simulator: seed a realistic mix, tear it all down, check the result."""
    from orchestrator.demo import run_demo

    settings = load_settings(app.config, {}, {"db": app.db or app.env.get("DRS_TEARDOWN_DB")})
    code = run_demo(app, settings, n_jobs=n_jobs, seed=seed, profile=profile, poll_interval=poll_interval)
    sys.exit(code)


@main.command()
@selection_options
@connection_options
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), help="save the plan artifact (JSON + hash)")
@output_option
@click.pass_obj
@handle_errors
def plan(app: App, out: str | None, output: str, max_targets: int | None, **kw: Any) -> None:
    """Read-only: what would happen to each selected task, and why."""
    selection = _selection(*(kw.pop(k) for k in ("job_ids", "jobs_file", "select_all", "name_glob", "status",
                                                 "db_use_type", "engine_type", "tags")))
    settings = app.settings(**_flags(max_targets=max_targets, **kw))
    conn = app.connect(settings)
    clock = RealClock()

    async def go(_stop: asyncio.Event) -> Plan:
        async with api.make_client(conn, settings, clock) as client:
            return await api.plan(client, selection, conn.endpoint, clock)

    the_plan = _run_async(app, go)
    doc = the_plan.to_json()
    if out:
        Path(out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if output == "json":
        app.emit(doc)
    else:
        app.err.print(plan_table(the_plan))
        app.err.print(counts_line(the_plan.counts()))
        app.err.print(f"plan hash {the_plan.hash}" + (f" saved to {out}" if out else ""))
    _check_max_targets(settings, the_plan, emitted=output == "json")


def _check_max_targets(settings: Settings, the_plan: Plan, *, emitted: bool = False) -> None:
    if settings.max_targets is not None and len(the_plan.items) > settings.max_targets:
        raise Exit(EXIT_REFUSED, f"refused: {len(the_plan.items)} tasks selected, more than --max-targets "
                                     f"{settings.max_targets}; nothing was sent", emitted=emitted)


@main.command()
@selection_options
@connection_options
@tuning_options
@click.option("--yes", is_flag=True, help="consent for pipelines: execute without asking (recorded in the trail)")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False),
              help="execute this reviewed plan; refuses (exit 2) if the live state drifted")
@output_option
@click.pass_obj
@handle_errors
def run(app: App, yes: bool, plan_file: str | None, output: str, max_targets: int | None, **kw: Any) -> None:
    """Plan, then execute: stop, poll, delete. Without --yes: a dry run, unless you confirm at a terminal."""
    sel_args = {k: kw.pop(k) for k in ("job_ids", "jobs_file", "select_all", "name_glob", "status",
                                       "db_use_type", "engine_type", "tags")}
    reviewed: Plan | None = None
    if plan_file:
        if sel_args["job_ids"] or sel_args["jobs_file"] or sel_args["select_all"] or any(
                sel_args[k] for k in ("name_glob", "status", "db_use_type", "engine_type", "tags")):
            raise Exit(EXIT_ERROR, "--plan takes its selection from the plan file: give no ids or filters")
        try:
            reviewed = load_plan(json.loads(Path(plan_file).read_text(encoding="utf-8")), plan_file)
        except json.JSONDecodeError as exc:
            raise Exit(EXIT_ERROR, f"--plan {plan_file}: not JSON ({exc})") from exc
        selection = reviewed.selection
    else:
        selection = _selection(*sel_args.values())
    settings = app.settings(**_flags(max_targets=max_targets, **kw))
    tuning = api.tuning_from(settings)
    conn = app.connect(settings)
    store = app.store(settings)
    clock = RealClock()
    plan_calls: list[Exchange] = []

    async def plan_live(stop: asyncio.Event) -> Plan:
        async with api.make_client(conn, settings, clock) as client:
            client.recorder = plan_calls.append
            the_plan = await api.plan(client, selection, conn.endpoint, clock)
        if stop.is_set():
            # A signal while planning must not be swallowed by the run that would follow.
            raise Exit(EXIT_INTERRUPTED, "interrupted while planning: no run started, nothing was sent")
        return the_plan

    live = _run_async(app, plan_live)
    _check_max_targets(settings, live)
    if reviewed is not None:
        problems = drift(reviewed, live)
        if problems:
            for p in problems[:50]:
                app.err.print(f"  drift: {p}")
            raise Exit(EXIT_REFUSED, f"refused: the live state drifted from the reviewed plan {plan_file} "
                                         f"({len(problems)} difference(s)); nothing was sent. Plan again.")
    consent = _consent(app, live, yes=yes, reviewed=reviewed is not None)
    ctx = _context(settings, conn.identity)
    run_id = start_run(store, live, ctx, tuning, clock.now(), consent=consent,
                       plan_hash=reviewed.hash if reviewed else live.hash)
    store.record_exchanges(run_id, ctx.worker, plan_calls)
    app.err.print(f"run {run_id}: {len(live.items)} task(s); consent: {consent}")
    _execute(app, store, conn, settings, tuning, ctx, run_id, fresh=True)


def _consent(app: App, the_plan: Plan, *, yes: bool, reviewed: bool) -> str:
    if yes:
        return "plan-file+yes-flag" if reviewed else "yes-flag"
    if app.output == "text":
        app.err.print(plan_table(the_plan))
        app.err.print(counts_line(the_plan.counts()))
    actionable = sum(1 for i in the_plan.items if i.action.value in ("stop_then_delete", "delete", "wait"))
    if sys.stdin.isatty() and app.err.is_terminal and app.output == "text":
        typed = click.prompt(f"This stops and deletes up to {actionable} task(s). Type the project id "
                             f"({the_plan.project_id}) to confirm", default="", show_default=False, err=True)
        if typed.strip() == the_plan.project_id:
            return "typed-project-id" + ("+plan-file" if reviewed else "")
        raise Exit(EXIT_REFUSED, "refused: the project id did not match; nothing was sent")
    message = "dry run: nothing was sent. Pass --yes to execute (or confirm at a terminal)."
    if app.output == "json":
        app.emit({**the_plan.to_json(), "dry_run": True, "exit_code": EXIT_REFUSED, "message": message})
    raise Exit(EXIT_REFUSED, message, emitted=app.output == "json")


def _execute(app: App, store: Store, conn: api.Connection, settings: Settings, tuning: Tuning, ctx: Context,
             run_id: str, *, fresh: bool, wait_for_all: bool = True) -> NoReturn:
    clock = RealClock()

    async def go(stop: asyncio.Event) -> api.RunSummary:
        async with api.make_client(conn, settings, clock) as client:
            with _progress(app) as progress:
                return await api.execute(store, client, ctx, tuning, clock, run_id, fresh=fresh,
                                         wait_for_all=wait_for_all, progress=progress, stop_event=stop)

    _finish(app, _run_async(app, go))


def _tuning_for_run(settings: Settings, run_options: dict[str, Any], flags: dict[str, Any]) -> Tuning:
    """A resumed run keeps its recorded tuning; flags given now override it."""
    base = Tuning(**{k: v for k, v in run_options.items() if k in Tuning.__dataclass_fields__})
    over = api.tuning_from(settings)
    changes = {k: getattr(over, k) for k in Tuning.__dataclass_fields__
               if k in flags or (k == "breakpoint" and "record_breakpoint" in flags)}
    return Tuning(**{**base.__dict__, **changes})


def _pick_run(store: Store, run_id: str | None) -> Any:
    if run_id:
        run = store.find_run(run_id)
        if run is None:
            raise Exit(EXIT_ERROR, f"no run {run_id!r} in {store.url} (see `drs-teardown status`)")
        return run
    unfinished = store.unfinished_runs()
    if not unfinished:
        raise Exit(EXIT_OK, "nothing to resume: every run is finished")
    return unfinished[0]


def _check_no_live_owner(store: Store, run_id: str) -> None:
    """On SQLite one process works a run: refuse while its owner is alive on this host."""
    host = socket.gethostname()
    for t in store.tasks(run_id):
        if not t.lease_owner or t.state in TERMINAL:
            continue
        owner_host, _, rest = t.lease_owner.partition(":")
        pid = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else -1
        if owner_host == host and pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            raise Exit(EXIT_ERROR, f"run {run_id} is being worked by process {pid} on this host; "
                                       "wait for it or stop it first")


@main.command()
@click.argument("run_id", required=False)
@connection_options
@tuning_options
@output_option
@click.pass_obj
@handle_errors
def resume(app: App, run_id: str | None, output: str, **kw: Any) -> None:
    """Continue an interrupted run (default: the latest unfinished one), reconciling intents first."""
    flags = _flags(**kw)
    settings = app.settings(**flags)
    store = app.store(settings)
    run = _pick_run(store, run_id)
    if run.status == "finished":
        _finish(app, api.summarize(store, run.id))
    if settings.project_id and settings.project_id != run.project_id:
        raise Exit(EXIT_ERROR, f"run {run.id} is for project {run.project_id}, the settings say "
                                   f"{settings.project_id}")
    settings = api.settings_for_run(settings, run)
    if not store.is_postgres:
        _check_no_live_owner(store, run.id)
    tuning = _tuning_for_run(settings, run.options, flags)
    conn = app.connect(settings)
    ctx = _context(settings, conn.identity)
    store.set_run(run.id, status="running")
    app.err.print(f"resuming run {run.id}")
    _execute(app, store, conn, settings, tuning, ctx, run.id, fresh=False)


@main.command()
@click.argument("run_id", required=False)
@connection_options
@tuning_options
@click.option("--wait-for-runs", type=click.FloatRange(0), default=0.0, show_default=True,
              help="with nothing to do, wait up to this many seconds for a run to appear")
@output_option
@click.pass_obj
@handle_errors
def worker(app: App, run_id: str | None, output: str, wait_for_runs: float, **kw: Any) -> None:
    """Join unfinished runs as an extra worker (PostgreSQL); exits when nothing is left."""
    from orchestrator.workers import work_runs

    flags = _flags(**kw)
    settings = app.settings(**flags)
    store = app.store(settings)
    if not store.is_postgres:
        raise Exit(EXIT_ERROR, "worker needs a shared PostgreSQL database (--db postgresql+psycopg://...); "
                                   "on SQLite one process works a run: use `drs-teardown resume`")
    sys.exit(work_runs(app, store, settings, flags, run_id, wait_for_runs=wait_for_runs))


@main.command()
@click.argument("run_id", required=False)
@output_option
@click.pass_obj
@handle_errors
def status(app: App, run_id: str | None, output: str) -> None:
    """Runs, or one run's tasks with local state and last remote status."""
    settings = app.settings()
    store = app.store(settings)
    if not run_id:
        runs = store.runs()
        if output == "json":
            app.emit({"runs": [{"run_id": r.id, "created_at": r.created_at.isoformat(), "status": r.status,
                                "exit_code": r.exit_code, "project_id": r.project_id, "ticket": r.ticket,
                                "consent": r.consent} for r in runs]})
        else:
            app.err.print(runs_table(runs) if runs else "no runs yet")
        return
    run = _pick_run(store, run_id)
    summary = api.summarize(store, run.id)
    if output == "json":
        app.emit({**summary.to_json(), "status": run.status})
        return
    app.err.print(f"run {run.id} ({run.status}), project {run.project_id}, created {run.created_at:%Y-%m-%d %H:%M:%S}")
    app.err.print(summary_table(summary.jobs, limit=10_000))
    app.err.print(counts_line(summary.counts))


@main.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_obj
@handle_errors
def audit(app: App, run_id: str, fmt: str) -> None:
    """The transition trail of a run, on stdout."""
    from orchestrator.report import export_audit

    store = app.store(app.settings())
    run = _pick_run(store, run_id)
    click.echo(export_audit(store, run.id, fmt), nl=False)


@main.command()
@click.argument("run_id", required=False)
@click.option("--expect-head", help="also require this head hash (anchored elsewhere, e.g. in the ticket)")
@output_option
@click.pass_obj
@handle_errors
def verify(app: App, run_id: str | None, expect_head: str | None, output: str) -> None:
    """Recompute the audit hash chain; exit 4 on any tampering, naming the first broken record."""
    store = app.store(app.settings())
    if expect_head and not run_id:
        raise Exit(EXIT_ERROR, "--expect-head needs a RUN_ID")
    runs = [_pick_run(store, run_id)] if run_id else store.runs(limit=10_000)
    results = [store.verify(r.id) for r in runs]
    head_ok = expect_head is None or (len(results) == 1 and results[0].head_hash == expect_head.lower())
    if output == "json":
        app.emit({"ok": all(v.ok for v in results) and head_ok, "runs": [v.__dict__ for v in results],
                  **({"expected_head": expect_head, "head_matches": head_ok} if expect_head else {})})
    else:
        for v in results:
            if v.ok:
                app.err.print(f"[green]ok[/green] run {v.run_id}: {v.records} records, head {v.head_hash}")
            else:
                app.err.print(f"[red]BROKEN[/red] run {v.run_id}: first broken record seq {v.broken_seq}: "
                              f"{_escape(v.problem or '')}")
        if not head_ok:
            app.err.print(f"[red]HEAD MISMATCH[/red]: expected {expect_head}, the trail ends at "
                          f"{results[0].head_hash}: records after the anchor were rewritten or added")
        if not results:
            app.err.print("no runs to verify")
    if not all(v.ok for v in results) or not head_ok:
        sys.exit(EXIT_STORE)


@main.command()
@click.argument("run_id")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), required=True)
@click.pass_obj
@handle_errors
def report(app: App, run_id: str, html_file: str) -> None:
    """A self-contained HTML report with a timeline."""
    from orchestrator.report import render_html

    store = app.store(app.settings())
    run = _pick_run(store, run_id)
    Path(html_file).write_text(render_html(store, run.id), encoding="utf-8")
    app.err.print(f"wrote {html_file}")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_obj
@handle_errors
def db_upgrade(app: App) -> None:
    """Apply migrations (every command also does this on start)."""
    from orchestrator.store.db import current_revision

    store = app.store(app.settings())
    app.err.print(f"database at revision {current_revision(store.engine)}")


@main.command("simulator", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                              "help_option_names": []}, add_help_option=False)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """The DRS simulator as an HTTP server: `simulator serve --help`."""
    # Imported on use: the simulator is not needed by any other command.
    from orchestrator.simulator.command import simulator_group

    simulator_group.main(args=ctx.args, prog_name="drs-teardown simulator", standalone_mode=True)


def _command_word(args: list[str]) -> str | None:
    """The subcommand named in argv, skipping the global options (and the values of --config/--db)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--config", "--db"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def entry(argv: list[str] | None = None) -> None:
    """Console-script entry: refuse secrets on the command line before parsing anything."""
    args = sys.argv[1:] if argv is None else argv
    # The simulator's --token is a test credential it accepts, not a secret of ours.
    if _command_word(args) != "simulator":
        try:
            refuse_secret_in_argv(args)
        except Exception as exc:
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {_escape(str(exc))}")
            sys.exit(EXIT_ERROR)
    main.main(args=args, prog_name="drs-teardown")


__all__ = ["DrsClient", "entry", "main"]
