"""A quick start: `drs-teardown --help` (and each command's `--help`) imports only click and the CLI's own light
modules — no database, no HTTP client, no simulator. Not timed: what is imported is what costs the time, and
that is checked exactly (`python -X importtime` names every module a process imports).

This file runs with the ordinary suite (no `bench` marker); its timing twin is the README's start-up figure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# What a help text must never load: the store (SQLAlchemy, Alembic, the database drivers), validation (pydantic),
# the HTTP client (httpx and its socket layer), the state machine, rich, JSON logging, and the simulator.
HEAVY = ("sqlalchemy", "alembic", "sqlite3", "psycopg", "pydantic", "httpx", "httpcore", "socket", "asyncio",
         "transitions", "tenacity", "rich", "pythonjsonlogger", "orchestrator.simulator", "orchestrator.store",
         "orchestrator.usecases", "orchestrator.engine", "orchestrator.drs.client", "orchestrator.report")


def imported_modules(args: list[str], cwd: Path,
                     code: str | None = None) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module the process imports (its -X importtime lines), and the finished process."""
    command = [sys.executable, "-X", "importtime", *(["-c", code] if code else ["-m", "orchestrator", *args])]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
             and "|" in line}
    return names, done


def heavy_in(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["run", "--help"], ["plan", "--help"],
                                  ["status", "--help"], ["demo", "--help"], ["db", "--help"]])
def test_help_imports_no_database_no_http_no_simulator(args: list[str], tmp_path: Path) -> None:
    names, done = imported_modules(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "orchestrator.cli" in names  # the real entry ran (the checker saw its imports)
    assert "Usage:" in done.stdout or "drs-teardown" in done.stdout
    assert heavy_in(names) == [], f"`drs-teardown {' '.join(args)}` imported {heavy_in(names)}"
    assert list(tmp_path.iterdir()) == [], "a help text created a file (a database?)"


def test_the_import_checker_sees_a_heavy_import(tmp_path: Path) -> None:
    """Not vacuous: a process that does import the store is caught."""
    names, done = imported_modules([], tmp_path, code="import orchestrator.cli, orchestrator.store.repo")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"sqlalchemy", "orchestrator.store"} <= set(heavy_in(names))


def test_a_command_still_imports_what_it_uses(tmp_path: Path) -> None:
    """The lazy imports load when the command runs: `status` opens the store (SQLAlchemy) and prints (rich); it
    opens it read-only, so it migrates nothing (no Alembic)."""
    names, done = imported_modules(["--db", f"sqlite:///{tmp_path / 'x.db'}", "status"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"sqlalchemy", "rich"} <= {n.split(".")[0] for n in names}
    assert "orchestrator.simulator" not in names
