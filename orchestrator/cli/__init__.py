"""The command line: parse, call orchestrator.usecases, render. Results on stdout; progress, logs, prompts on
stderr. Nothing outside this package imports it."""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import sys

import click

from orchestrator.cli.actions import plan, resume, run, worker
from orchestrator.cli.admin import completion, db, simulator
from orchestrator.cli.demo import demo
from orchestrator.cli.evidence import audit, report, status, verify
from orchestrator.cli.shell import App, Root, set_current_app
from orchestrator.config import LANGUAGES, LOG_FORMATS
from orchestrator.version import __version__

EPILOG = """\b
Exit codes:
  0    every selected task (and its children) deleted or already gone
  1    usage, config or unexpected error (the message names the input)
  2    refused by a safety rail: no confirmation, plan drift, --max-targets, overlap with an unfinished run
  3    finished, but some tasks blocked, failed, timed out, not found, or still present
  4    store or audit failure (verify/report found tampering, database lost)
  130  interrupted (resumable: drs-teardown resume)

\b
Environment (secrets only here or in a chmod-600 config file, never on the command line):
  DRS_TEARDOWN_ENDPOINT, DRS_TEARDOWN_REGION, DRS_TEARDOWN_PROJECT_ID, DRS_TEARDOWN_DB,
  DRS_TEARDOWN_LANGUAGE, DRS_TEARDOWN_LOG_FORMAT,
  DRS_TEARDOWN_AUTH_TOKEN  or  DRS_TEARDOWN_IAM_USER / _IAM_PASSWORD / _IAM_DOMAIN / _IAM_ENDPOINT
  or  HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK (/ HUAWEICLOUD_SDK_SECURITY_TOKEN)
  Precedence: flags > environment > config file > defaults.

\b
Examples:
  drs-teardown demo
  drs-teardown plan --all -o plan.json && drs-teardown run --plan plan.json --yes
  drs-teardown --log-format json -v run --jobs-file ids.txt --yes --output json
  eval "$(drs-teardown completion bash)"
"""


@click.group(cls=Root, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                        "max_content_width": 110})
@click.option("--config", metavar="FILE", help="TOML config (default ./drs-teardown.toml if present)")
@click.option("--db", help="database URL (default sqlite:///./drs-teardown.db; env DRS_TEARDOWN_DB)")
@click.option("-v", "--verbose", count=True, help="-v requests and steps, -vv debug (secrets always masked)")
@click.option("--language", type=click.Choice(LANGUAGES, case_sensitive=False),
              help="language of the service's messages, sent as X-Language (env DRS_TEARDOWN_LANGUAGE)")
@click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False),
              help="stderr logs as text, or one JSON object per line (env DRS_TEARDOWN_LOG_FORMAT)")
@click.option("--progress-interval", type=click.FloatRange(0.1), metavar="SECONDS",
              help="without a terminal, a progress line at least this often (default 10)")
@click.version_option(__version__, prog_name="drs-teardown")
@click.pass_context
def main(ctx: click.Context, config: str | None, db: str | None, verbose: int, language: str | None,
         log_format: str | None, progress_interval: float | None) -> None:
    """Tear down Huawei Cloud DRS tasks safely and provably: stop, poll, delete behind a state-machine guard,
    every transition in a hash-chained audit trail."""
    ctx.obj = App(config, db, verbose, language=language.lower() if language else None,
                  log_format=log_format.lower() if log_format else None, progress_interval=progress_interval)
    set_current_app(ctx.obj)


for _command in (demo, plan, run, resume, worker, status, audit, verify, report, db, simulator, completion):
    main.add_command(_command)


def entry(argv: list[str] | None = None) -> None:
    """Console-script entry: Python warnings go to the log (shown at -vv), never straight to the user."""
    logging.captureWarnings(True)
    # A run allocates many small objects that live for its whole length (tasks, records): the default young-
    # generation threshold (700) had the collector scan them over and over (~13% of a 10,000-task run's CPU).
    gc.set_threshold(20_000, 10, 10)
    try:
        main.main(args=argv, prog_name="drs-teardown")
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise  # a message for Python to print
        _leave(exc.code or 0)


def _leave(code: int) -> None:
    """Exit without tearing the interpreter down: the command has finished and its output is written; freeing a
    large run's objects one by one only delays the exit (about a fifth of a second at 10,000 tasks). What is
    buffered is flushed first (if that fails, the ordinary exit reports it), then the functions registered with
    `atexit` run (logging's shutdown among them). Under a profiler or a tracer (cProfile, coverage) the ordinary
    exit runs, so that they write what they measured."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    try:
        _flush()
    except Exception:  # a closed pipe, a full disk: let Python's own exit say so
        sys.exit(code)
    atexit._run_exitfuncs()  # prints, never raises, what a function raised
    with contextlib.suppress(Exception):
        _flush()  # what the exit functions wrote
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


__all__ = ["entry", "main"]
