"""Administration: the database, the simulator, shell completion."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from orchestrator.cli.options import output_option
from orchestrator.cli.shell import App
from orchestrator.errors import EXIT_OK, UsageError

COMPLETION_HELP = """Print the shell completion script for bash, zsh or fish (click's completion).

\b
Install:
  bash:  eval "$(drs-teardown completion bash)"         (e.g. in ~/.bashrc)
  zsh:   eval "$(drs-teardown completion zsh)"          (e.g. in ~/.zshrc)
  fish:  drs-teardown completion fish > ~/.config/fish/completions/drs-teardown.fish
"""


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@output_option
@click.pass_obj
def db_upgrade(app: App, output: str) -> int:
    """Apply migrations (every command also does this on start).

    \b
    Example:
      drs-teardown --db postgresql+psycopg://teardown@db/teardown db upgrade
    """
    from orchestrator.store.db import current_revision

    store = app.store(app.settings())
    revision = current_revision(store.engine)
    if output == "json":
        app.emit({"revision": revision, "exit_code": EXIT_OK})
    app.say(f"database at revision {revision}")
    return EXIT_OK


@click.command("simulator", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                              "help_option_names": []}, add_help_option=False)
@click.pass_context
def simulator(ctx: click.Context) -> int:
    """The DRS simulator as an HTTP server: `simulator serve --help`."""
    # Imported on use: the simulator is not needed by any other command.
    from orchestrator.simulator.command import simulator_group

    rv = simulator_group.main(args=ctx.args, prog_name="drs-teardown simulator", standalone_mode=False)
    return rv if isinstance(rv, int) else EXIT_OK


@click.command(help=COMPLETION_HELP)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    cls = get_completion_class(shell)
    if cls is None:
        raise UsageError(f"no completion for {shell}")
    comp = cls(ctx.find_root().command, {}, "drs-teardown", "_DRS_TEARDOWN_COMPLETE")
    click.echo(comp.source())
    return EXIT_OK
