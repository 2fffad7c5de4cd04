"""The shell every command shares: the App object, the one error mapping, the signal-aware runner.

The error mapping lives in `Root.main`: click's own usage errors, every `TeardownError` (by its `exit_code`),
interrupts and anything unexpected end the same way: a message on stderr and, under `--output json`, exactly
one JSON document `{"error", "exit_code"}` on stdout; the process exit code is the document's.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orchestrator.cli.logs import LOG_CONTEXT, say_log, setup_logging
from orchestrator.config import load_settings
from orchestrator.errors import EXIT_ERROR, EXIT_INTERRUPTED, Interrupted, TeardownError
from orchestrator.secrets import SecretRedactingFilter, collect_secrets, mask_url_passwords, refuse_secret_in_argv

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console

    from orchestrator.config import Settings
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Connection

# Start-up: a command imports what it uses when it runs (rich, the store, the use cases, and through them
# SQLAlchemy, Alembic, pydantic, httpx), so `--help` and a usage error cost only click.

T = TypeVar("T")
log = logging.getLogger("drs_teardown.cli")
# The App of the command being run, for the error mapping (click's context is gone when an error reaches it).
CURRENT_APP: contextvars.ContextVar[App | None] = contextvars.ContextVar("drs_teardown_app", default=None)
GLOBAL_VALUE_OPTIONS = ("--config", "--db", "--language", "--log-format", "--progress-interval")


class App:
    """What the global options say, shared by every command."""

    def __init__(self, config: str | None, db: str | None, verbose: int, *, language: str | None = None,
                 log_format: str | None = None, progress_interval: float | None = None) -> None:
        self.config, self.db, self.verbose = config, db, verbose
        self.globals = {k: v for k, v in (("language", language), ("log_format", log_format),
                                          ("progress_interval", progress_interval)) if v is not None}
        self.env = dict(os.environ)
        self.output = "text"
        self.emitted = False
        self.log_format = log_format or self.env.get("DRS_TEARDOWN_LOG_FORMAT", "text").strip().lower()
        self.redactor: SecretRedactingFilter = setup_logging(verbose, self.env, self.log_format)

    @cached_property
    def err(self) -> Console:
        """stderr for people (rich, made on first use)."""
        return _console(stderr=True)

    @cached_property
    def out(self) -> Console:
        """stdout for people (rich, made on first use)."""
        return _console(stderr=False)

    def settings(self, **flags: Any) -> Settings:
        """flags > environment > config file > defaults; the global options count as flags."""
        settings = load_settings(self.config, self.env, {"db": self.db, **self.globals, **flags})
        for secret in collect_secrets({}, settings.auth):
            self.redactor.add(secret)
        if settings.log_format != self.log_format:  # set in the config file
            self.log_format = settings.log_format
            setup_logging(self.verbose, self.env, self.log_format, settings.auth, self.redactor)
        return settings

    def connect(self, settings: Settings) -> Connection:
        """Resolve the connection; fetched IAM tokens join the log filter."""
        from orchestrator.usecases import connect

        return connect(settings, self.env, on_token=self.redactor.add)

    def store(self, settings: Settings, *, read_only: bool = False) -> Store:
        """The store; reading commands open it read-only (no migration, no write: evidence stays as it was)."""
        from orchestrator.store.repo import Store

        return Store(settings.db, read_only=read_only)

    def emit(self, doc: dict[str, Any]) -> None:
        """The one JSON document on stdout."""
        if self.emitted:  # never two documents: the first one stands
            return
        self.emitted = True
        click.echo(mask_url_passwords(self.redactor.redact(json.dumps(doc, indent=2, default=str))))

    def say(self, message: str, *, level: int = logging.INFO) -> None:
        """A line for the operator (stderr), never markup-interpreted; a JSON log line with --log-format json."""
        if self.log_format == "json":
            say_log.log(level, message)
        else:
            self.err.print(message, markup=False, highlight=False)


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        # Logs, pipes and CI: never wrap a message mid-path; tables get room.
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=160)
    return console


def run_async(app: App, factory: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine with SIGINT/SIGTERM finishing the current step, then stopping (exit 130, resumable)."""
    import asyncio

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signame: str) -> None:
            if not stop.is_set():
                app.say(f"{signame}: finishing the current step, then stopping (resumable)")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            return await factory(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def wants_json(args: Sequence[str]) -> bool:
    """`--output json` anywhere on the line (also after the option click refused)."""
    for i, arg in enumerate(args):
        if arg == "--output=json" or (arg == "--output" and i + 1 < len(args) and args[i + 1] == "json"):
            return True
    return False


def command_word(args: Sequence[str]) -> str | None:
    """The subcommand named in argv, skipping the global options (and their values)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in GLOBAL_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def refuse_repeated_options(group: click.Group, args: Sequence[str]) -> None:
    """A single-valued option given twice is refused (click would silently keep the last)."""
    commands: list[click.Command] = [group]
    word = command_word(args)
    sub = group.commands.get(word or "")
    if sub is not None and word != "simulator":
        commands.append(sub)
    for command in commands:
        for param in command.params:
            if not isinstance(param, click.Option) or param.multiple or param.is_flag or param.count:
                continue
            names = [*param.opts, *param.secondary_opts]
            seen = [a for a in args if a in names or any(a.startswith(n + "=") for n in names if n.startswith("--"))]
            if len(seen) > 1:
                raise click.UsageError(f"option {names[-1]} given {len(seen)} times: give it once")


class Root(click.Group):
    """The top-level group: the one place errors become messages, documents and exit codes."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        token, log_token = CURRENT_APP.set(None), LOG_CONTEXT.set(MappingProxyType({}))
        try:
            code = self._run(argv, prog_name or "drs-teardown", complete_var, **extra)
        finally:
            CURRENT_APP.reset(token)
            LOG_CONTEXT.reset(log_token)
        sys.exit(code)

    def _run(self, argv: list[str], prog_name: str, complete_var: str | None, **extra: Any) -> int:
        if (complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper()) in os.environ:
            # The shell asks for completions (`completion bash|zsh|fish` installed the hook): click answers them
            # from COMP_WORDS and exits; the command line is not run, and it has no arguments to check.
            super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            return 0
        as_json = wants_json(argv)
        try:
            if command_word(argv) != "simulator":
                refuse_secret_in_argv(argv)
            if not argv:
                click.echo(self.get_help(click.Context(self, info_name=prog_name)), err=True)
                raise click.UsageError("no command given (see the list above)")
            refuse_repeated_options(self, argv)
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            return rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.ClickException as exc:
            return _fail(as_json, EXIT_ERROR, _usage_text(exc))
        except (click.Abort, KeyboardInterrupt):
            return _fail(as_json, EXIT_INTERRUPTED, "interrupted (any run is resumable: drs-teardown resume)")
        except TeardownError as exc:
            return _fail(as_json, exc.exit_code, _teardown_text(exc), getattr(exc, "document", None))
        except SystemExit:
            raise
        except BaseException as exc:  # the contract: no traceback reaches a user
            log.debug("unexpected error", exc_info=True)
            text = f"unexpected error: {type(exc).__name__}: {exc} (a run it interrupted is resumable: " \
                   "drs-teardown resume; -vv shows the traceback)"
            return _fail(as_json, EXIT_ERROR, text)


def _usage_text(exc: click.ClickException) -> str:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        cmd = ctx.command_path
        return f"{message}\n(usage: {ctx.get_usage().removeprefix('Usage: ')}; see `{cmd} --help`)"
    return message


def _teardown_text(exc: TeardownError) -> str:
    message = exc.message or str(exc) or type(exc).__name__
    if isinstance(exc, Interrupted):
        return message
    return message


def _fail(as_json: bool, code: int, message: str, document: dict[str, Any] | None = None) -> int:
    app = CURRENT_APP.get()
    redact = app.redactor.redact if app is not None else SecretRedactingFilter(collect_secrets(os.environ)).redact
    message = mask_url_passwords(redact(message))
    err = app.err if app is not None else _console(stderr=True)
    if app is not None and app.log_format == "json":
        app.say(message, level=logging.WARNING if code in (0, 2, EXIT_INTERRUPTED) else logging.ERROR)
    elif code in (0, 2, EXIT_INTERRUPTED):
        err.print(message, markup=False, highlight=False)
    else:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    if as_json or (app is not None and app.output == "json"):
        doc = {**(document or {}), "error": message, "exit_code": code}
        if app is not None:
            app.emit(doc)
        else:
            click.echo(mask_url_passwords(json.dumps(doc, indent=2, default=str)))
    return code


def set_current_app(app: App) -> None:
    CURRENT_APP.set(app)
