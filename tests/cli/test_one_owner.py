"""One owner per run, with real processes (issue 13): two `run --yes` on one SQLite file at the same moment, and
two `resume` of one interrupted run started behind a barrier: one works, the other is refused naming the run
or its holder, and no task gets more than one stop and one delete."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.store.repo import Holder, Store
from tests.conftest import PG_ADMIN_URL
from tests.kit import PROJECT, TOKEN, add, simulator, sqlite_url

ROUNDS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A new, empty database per round: a SQLite file, or a PostgreSQL database (dropped afterwards)."""
    if request.param == "sqlite":
        yield lambda name: sqlite_url(tmp_path, f"{name}.db")
        return
    request.getfixturevalue("pg_url")  # the server is there (or a clear skip)
    import psycopg

    admin, made = PG_ADMIN_URL.replace("+psycopg", ""), []

    def make(name: str) -> str:
        db = f"drs_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        made.append(db)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
                **(extra or {})})
    return env


def _together(args: list[list[str]], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start the processes behind a barrier: each waits for a go file before it imports anything."""
    go = cwd / "go"
    starter = "import os,sys,time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.001)\n" \
              "sys.argv=['drs-teardown',*sys.argv[2:]]\nfrom orchestrator.cli import entry\nentry()"
    procs = [subprocess.Popen([sys.executable, "-c", starter, str(go), *a], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in args]
    time.sleep(0.3)
    go.write_text("go")
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    go.unlink()
    return out


def test_two_runs_at_once_on_one_store_one_works_the_other_is_refused(tmp_path: Path,
                                                                    fresh_db: Callable[[str], str]) -> None:
    # On PostgreSQL too: two runs started at once on one database used to both pass the overlap check and both
    # work every task (two stops and two deletes each).
    for n in range(ROUNDS):
        db = fresh_db(f"two-{n}")
        with simulator(profile="fast") as (sim, url):
            jobs = add(sim, 100, status="INCRE_TRANSFER_STARTED")
            cmd = ["--db", db, "run", "--all", "--yes", "--poll-interval", "0.05", "--output", "json"]
            results = _together([cmd, cmd], _env(url), tmp_path)
            calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        codes = sorted(r.returncode for r in results)
        docs = [json.loads(r.stdout) for r in results]
        if codes == [0, 0]:
            # The second got going only after the first had finished: it found everything gone (skipped as
            # deleted, or no longer listed at all), sent nothing.
            assert any(set(d["counts"]) <= {"skipped"} for d in docs), [
                {k: d.get(k) for k in ("run_id", "counts", "selected", "message")} for d in docs]
        else:
            assert codes in ([0, 1], [0, 2]), [(r.returncode, r.stderr[-300:]) for r in results]
            doc = next(d for d, r in zip(docs, results, strict=True) if r.returncode != 0)
            assert "resume" in doc["error"] or "process" in doc["error"]
        assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] == 1 for j in jobs), calls


def test_two_resumes_behind_a_barrier_one_works_the_other_names_the_holder(tmp_path: Path,
                                                                          fresh_db: Callable[[str], str]) -> None:
    # On PostgreSQL the killed run's task leases must lapse first (30 s): one round there.
    for n in range(ROUNDS):
        db = fresh_db(f"resume-{n}")
        if n and not db.startswith("sqlite"):
            break
        with simulator(profile="fast") as (sim, url):
            jobs = add(sim, 8, status="INCRE_TRANSFER_STARTED")
            killed = subprocess.run([sys.executable, "-m", "orchestrator", "--db", db, "run", "--all", "--yes",
                                     "--poll-interval", "0.05", "--output", "json"],
                                    env=_env(url, {"DRS_TEARDOWN_CRASH_AT": "after_response:stop:1"}), cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120, check=False)
            assert killed.returncode < 0, killed.stderr
            results = _together([["--db", db, "resume", "--output", "json"]] * 2, _env(url), tmp_path)
            calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        codes = sorted(r.returncode for r in results)
        # Either the second is refused while the first works, or it got the run only once the first had
        # finished it (then it sends nothing): never both at once.
        assert codes in ([0, 1], [0, 0]), [(r.returncode, r.stderr[-300:]) for r in results]
        for r in results:
            if r.returncode == 1:
                error = json.loads(r.stdout)["error"]
                assert "is being worked by process" in error and f" on {socket.gethostname()} " in error
                assert " since 20" in error, error
        assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] == 1 for j in jobs), calls
        store = Store(db)
        (run,) = store.runs()
        assert store.state_counts(run.id) == {"deleted": 8} and store.verify(run.id).ok
        store.close()


@pytest.mark.postgres
def test_the_owner_recorded_never_carries_the_database_password(pg_url: str, tmp_path: Path) -> None:
    # The owner's command line (`--db URL`) is written to the run row, named to a process refused and written
    # into the trail when a dead run is settled: a password in the URL must not go with it.
    secret = "Pw-DISTINCTIVE-db-4c1e"
    db = pg_url.replace("://postgres@", f"://postgres:{secret}@")
    with simulator(profile="fast") as (sim, url):
        add(sim, 3, status="INCRE_TRANSFER_STARTED")
        killed = subprocess.run([sys.executable, "-m", "orchestrator", "--db", db, "run", "--all", "--yes",
                                 "--poll-interval", "0.05", "--output", "json"],
                                env=_env(url, {"DRS_TEARDOWN_CRASH_AT": "after_response:stop:1"}), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode < 0, killed.stderr
    store = Store(pg_url)
    (run,) = store.runs()
    assert run.owner_command and "--db postgresql+psycopg://postgres:***@" in run.owner_command
    assert secret not in Holder.of_run(run).describe()  # type: ignore[union-attr]
    store.close()
