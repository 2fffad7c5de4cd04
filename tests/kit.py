"""Shared helpers for orchestrator tests: a simulator-backed teardown in a few lines, and the CLI runner."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from orchestrator import api, usecases
from orchestrator.clock import Clock, RealClock
from orchestrator.config import Settings
from orchestrator.planning import Plan
from orchestrator.selection import Selection
from orchestrator.simulator import JobSpec, Simulator
from orchestrator.store.repo import Store

TOKEN = "tok-" + "x" * 20
PROJECT = "0123456789abcdef0123456789abcdef"


@dataclass
class Teardown:
    """The result of one teardown against the simulator."""

    store: Store
    run_id: str
    summary: usecases.RunSummary
    plan: Plan
    sim: Simulator
    outcomes: dict[str, str] = field(default_factory=dict)


@contextmanager
def simulator(jobs: int = 0, seed: int = 1, profile: str = "fast", **kw: Any) -> Iterator[tuple[Simulator, str]]:
    sim = Simulator(project_id=PROJECT, seed=seed, jobs=jobs, profile=profile, tokens={TOKEN}, **kw)
    with sim.serve() as url:
        yield sim, url


def settings(url: str, db: str, **kw: Any) -> Settings:
    base: dict[str, Any] = {"endpoint": url, "project_id": PROJECT, "poll_interval": 0.05, "db": db}
    base.update(kw)
    return Settings(**base)


async def teardown_async(sim: Simulator, url: str, db: str, selection: Selection | None = None, *,
                         clock: Clock | None = None, env: Mapping[str, str] | None = None,
                         **settings_kw: Any) -> Teardown:
    s = settings(url, db, **settings_kw)
    store = Store(s.db)
    td = usecases.Teardown(s, dict(env) if env is not None else {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN},
                           selection=selection or Selection(all=True), consent="test", store=store,
                           clock=clock or RealClock(),
                           # Looked up per call: tests replace `api.make_client` to put their transport in.
                           client_factory=lambda conn, s, c: api.make_client(conn, s, c))
    run_plan = await td.plan()
    run_id = td.record()
    summary = await td.execute()
    return Teardown(store, run_id, summary, run_plan.as_plan(), sim, {j["job_id"]: j["outcome"] for j in summary.jobs})


def teardown(sim: Simulator, url: str, db: str, selection: Selection | None = None, **kw: Any) -> Teardown:
    return asyncio.run(teardown_async(sim, url, db, selection, **kw))


def add(sim: Simulator, n: int = 1, **spec: Any) -> list[str]:
    return sim.add_jobs(n, JobSpec(**spec))


def cli(args: list[str], env: Mapping[str, str] | None = None, input: str | None = None,
        cwd: Path | None = None) -> Result:
    """Invoke the CLI in-process through click's runner; `env` replaces the drs-teardown variables."""
    from orchestrator.cli import main

    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    full_env.update(env or {})
    runner = CliRunner()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with _patched_environ(full_env):
            return runner.invoke(main, args, input=input, catch_exceptions=False)
    finally:
        os.chdir(old)


@contextmanager
def _patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sqlite_url(tmp_path: Path, name: str = "t.db") -> str:
    return f"sqlite:///{tmp_path / name}"


_TEMPLATE: Path | None = None


def db_at_revision(path: Path, revision: str) -> None:
    """A SQLite database at an older schema (`revision`), as an older version of the tool left it."""
    from alembic import command

    from orchestrator.store.db import alembic_config, make_engine

    engine = make_engine(f"sqlite:///{path}")
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def migrated_db(tmp: Path) -> str:
    """A migrated SQLite database, copied from a template (migrating per example would dominate property tests)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = tmp.parent / f"template-{uuid.uuid4().hex}.db"
        Store(f"sqlite:///{_TEMPLATE}").close()
    target = tmp / f"{uuid.uuid4().hex}.db"
    shutil.copy(_TEMPLATE, target)
    return f"sqlite:///{target}"
