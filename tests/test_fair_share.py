"""Fair sharing of a PostgreSQL run (real PostgreSQL, real processes, the simulator over HTTP): workers that join
a running run get their part of it, because the run's first process holds no more than its share and hands the
rest back at its next heartbeat; a joiner killed midway has its tasks taken over; no task is ever acted on by
two workers at once, and the chain verifies. Not timed: the checks are about who did what, from the trail."""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.engine.claims import MIN_SHARE
from orchestrator.simulator import ApiFaults, JobSpec, load_profile
from tests.kit import simulator
from tests.test_workers import Proc, _check_run, _finish, _rows, _scalar, _start, _wait_for

pytestmark = pytest.mark.postgres

TASKS = 300
# Releases slower than starting a worker process, so that joiners arrive while there is work left to share.
PROFILE = replace(load_profile("fast"), release_seconds=(3.0, 5.0),
                  faults={"batch-jobs": ApiFaults(latency_ms=150), "default": ApiFaults(latency_ms=10)})
ARGS = ["--poll-interval", "0.2"]


def _stops_began(db: str, runner: Proc) -> object:
    return _scalar(db, "select count(*) from audit_records where trigger = 'stop'") \
        if runner.popen.poll() is None else True


def _joiners(tmp_path: Path, db: str, url: str) -> list[Proc]:
    return [_start(tmp_path, f"worker{i}", db, url, ["worker", *ARGS, "--wait-for-runs", "10"]) for i in (1, 2)]


def _deleted_by_worker(db: str) -> Counter[str]:
    return Counter(dict(_rows(db, "select worker, count(*) from audit_records where trigger = 'deleted' "
                                  "group by worker")))


def test_workers_joining_after_the_first_stops_each_do_a_fair_part(pg_url: str, tmp_path: Path) -> None:
    with simulator(profile=PROFILE, seed=7) as (sim, url):  # type: ignore[arg-type]
        sim.add_jobs(TASKS, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        runner = _start(tmp_path, "run", pg_url, url, ["run", "--yes", "--all", *ARGS])
        procs = [runner]
        # The run has claimed everything (it was alone) and begun stopping when the workers start.
        _wait_for("the run's first stops", lambda: _stops_began(pg_url, runner), procs)
        procs += _joiners(tmp_path, pg_url, url)
        _finish(procs)
        logs = "\n".join(p.tail() for p in procs)
        assert [p.popen.returncode for p in procs] == [0, 0, 0], logs
        figures = _check_run(pg_url, sim, None, procs)
    deleted = _deleted_by_worker(pg_url)
    assert sum(deleted.values()) == TASKS
    # Three workers, each with a substantial part of the deletes (a third each when perfectly fair).
    assert len(deleted) == 3, (deleted, logs)
    assert min(deleted.values()) >= 0.15 * TASKS, (deleted, figures)
    # Some of the joiners' work came to them by hand-back: the run's process gave up what was over its share
    # (the rest they claimed: tasks the run's process had not claimed yet when they arrived).
    assert figures["handed_back"] >= MIN_SHARE, figures
    print(f"deleted by worker: {sorted(deleted.values(), reverse=True)}, handed back: {figures['handed_back']}")


def test_a_joiner_killed_midway_has_its_share_taken_over(pg_url: str, tmp_path: Path) -> None:
    with simulator(profile=PROFILE, seed=8) as (sim, url):  # type: ignore[arg-type]
        sim.add_jobs(TASKS, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        runner = _start(tmp_path, "run", pg_url, url, ["run", "--yes", "--all", *ARGS])
        procs = [runner]
        _wait_for("the run's first stops", lambda: _stops_began(pg_url, runner), procs)
        procs += _joiners(tmp_path, pg_url, url)
        victim = procs[1]
        # Midway: the victim got its share handed over and has acted on some of it (intents of its own).
        _wait_for("the victim to act", lambda: _scalar(
            pg_url, "select count(*) from audit_records where worker like :w and trigger in ('stop', 'delete')",
            w=victim.worker_like), procs)
        held = _scalar(pg_url, "select count(*) from tasks t join workers w on w.id = t.lease_owner "
                               "where w.pid = :pid and t.state not in ('deleted', 'skipped')", pid=victim.popen.pid)
        victim.popen.send_signal(signal.SIGKILL)
        _finish(procs)
        logs = "\n".join(p.tail() for p in procs)
        assert victim.popen.returncode == -signal.SIGKILL
        assert [procs[0].popen.returncode, procs[2].popen.returncode] == [0, 0], logs
        assert held, "the victim held nothing when it was killed: not midway"
        figures = _check_run(pg_url, sim, victim, procs)
    assert len(figures["workers"]) == 3, figures
    assert figures["takeovers"] >= 1
