"""Several workers on one run (real PostgreSQL, real processes, the simulator over HTTP): they share the run,
one dies by SIGKILL midway, its tasks are taken over after their lease runs out and reconciled from their
intent states; every task ends as policy says, no task is acted on by two workers at once, and the chain
verifies."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from orchestrator.simulator import ApiFaults, JobSpec, Simulator, load_profile
from orchestrator.store.repo import Store
from tests.kit import PROJECT, TOKEN, simulator

pytestmark = pytest.mark.postgres

LEASE_SECONDS = "2"
CLAIM_SIZE = "20"
# Slow enough that three processes overlap on 300 tasks, fast enough for the whole test to take seconds.
PROFILE = replace(load_profile("fast"), release_seconds=(0.5, 1.5),
                  faults={"batch-jobs": ApiFaults(latency_ms=150), "default": ApiFaults(latency_ms=10)})
INTENTS = ("stop", "resend", "delete", "redelete")
POLICY = {"stop_then_delete": "deleted", "delete": "deleted", "block": "blocked", "skip": "skipped"}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def tail(self) -> str:
        return f"--- {self.name} (exit {self.popen.returncode}) ---\n{self.err.read_text()[-3000:]}"

    @property
    def worker_like(self) -> str:
        return f"%:{self.popen.pid}:%"


def _seed(sim: Simulator) -> None:
    sim.add_jobs(280, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
    sim.add_jobs(10, JobSpec(status="RELEASE_RESOURCE_COMPLETE", db_use_type="sync"))  # planned: delete
    # Yearly/monthly: blocked.
    sim.add_jobs(10, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync", period_order_id="CS-1"))


def _start(tmp_path: Path, name: str, db: str, url: str, args: list[str], **extra_env: str) -> Proc:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_"))}
    env.update(DRS_TEARDOWN_AUTH_TOKEN=TOKEN, DRS_TEARDOWN_PROJECT_ID=PROJECT, DRS_TEARDOWN_ENDPOINT=url,
               DRS_TEARDOWN_LEASE_SECONDS=LEASE_SECONDS, DRS_TEARDOWN_CLAIM_SIZE=CLAIM_SIZE, **extra_env)
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        popen = subprocess.Popen([sys.executable, "-m", "orchestrator", "--db", db, *args], env=env, stdout=o,
                                 stderr=e, cwd=tmp_path)
    return Proc(name, popen, out, err)


def _wait_for(what: str, cond: Callable[[], Any], procs: list[Proc], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(p.tail() for p in procs))


def _scalar(db: str, sql: str, **params: Any) -> Any:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    except ProgrammingError:
        return None  # not migrated yet
    finally:
        engine.dispose()


def _finish(procs: list[Proc], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.popen.poll() is None:
                    q.popen.kill()
            raise AssertionError("workers did not finish\n" + "\n".join(q.tail() for q in procs)) from None


def _rows(db: str, sql: str) -> list[Any]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def _check_run(db: str, sim: Simulator, victim: Proc | None, procs: list[Proc]) -> dict[str, Any]:
    """Everything the issue asks of a shared run (with `victim`: killed, its tasks taken over); returns figures
    for the test to add its own checks."""
    logs = "\n".join(p.tail() for p in procs)
    run_id, status = _rows(db, "select id, status from runs")[0]
    assert status == "finished", logs
    # Every task ends as policy says.
    tasks = _rows(db, "select job_id, planned_action, state from tasks")
    assert len(tasks) == 300
    wrong = [(j, a, s) for j, a, s in tasks if POLICY[a] != s]
    assert not wrong, f"{len(wrong)} task(s) ended against policy, e.g. {wrong[:5]}\n{logs}"
    # One chain, intact, with several writers.
    store = Store(db, migrate=False)
    try:
        verification = store.verify(run_id)
        records = store.records(run_id)
        calls = store.api_calls(run_id)
    finally:
        store.close()
    assert verification.ok, verification.problem
    workers = {r.worker for r in records}
    assert len(workers) >= 2, workers
    takeovers = [r for r in records if r.trigger == "takeover"]
    victim_id = None
    if victim is not None:
        victim_id = next(r.worker for r in records if f":{victim.popen.pid}:" in r.worker)
        # The victim held tasks when it died, and a live worker took them over once its lease ran out.
        assert any(victim_id in (r.detail or "") for r in takeovers), "nothing was taken over from the victim"
    # No task acted on by two workers at once. Every request follows a committed intent naming its worker; per
    # task, a worker's intents come in one block while it holds the task, and a new worker's first intent comes
    # after the task changed hands in the trail (its takeover record naming the previous holder, or the previous
    # holder's hand-back record), and after it read the task's status itself.
    intents: dict[str, list[Any]] = defaultdict(list)
    moves: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        if r.job_id and r.trigger in INTENTS:
            intents[r.job_id].append(r)
        if r.trigger in ("takeover", "handed_back"):
            moves[r.job_id].append(r)
    reads: dict[tuple[str, str], list[Any]] = defaultdict(list)
    sends: dict[str, list[Any]] = defaultdict(list)
    for c in calls:
        for job_id in c.job_ids.split(","):
            if c.api == "batch-status":
                reads[(job_id, c.worker)].append(c.at)
            elif c.api == "batch-jobs":
                sends[job_id].append(c)
    handed_over = 0
    for job_id, recs in intents.items():
        blocks = [recs[0].worker]
        for prev, r in itertools.pairwise(recs):
            if r.worker != blocks[-1]:
                took = next((m for m in moves[job_id] if prev.seq < m.seq < r.seq and (
                    (m.trigger == "takeover" and m.worker == r.worker)
                    or (m.trigger == "handed_back" and m.worker == prev.worker))), None)
                assert took is not None, f"{job_id}: {r.worker} acted after {prev.worker} without a takeover"
                observed = [at for at in reads[(job_id, r.worker)] if took.at <= at <= r.at]
                assert observed, f"{job_id}: {r.worker} acted on a task it took over without reading its status"
                blocks.append(r.worker)
                handed_over += 1
        # The HTTP log agrees: the calls naming this task come from one worker at a time, in the intents' order
        # (a worker may have died between an intent and its request: a block without calls).
        senders = [c.worker for c in sorted(sends[job_id], key=lambda c: c.at)]
        compact = [w for i, w in enumerate(senders) if i == 0 or w != senders[i - 1]]
        rest = iter(blocks)
        assert all(w in rest for w in compact), f"{job_id}: batch-jobs calls {compact} vs intents {blocks}"
    # The service's view: each destructive call it received is explained by an intent, nothing was stopped or
    # deleted twice, and the client broke none of its rules.
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in sim.destructive_calls:
        received[c["job_id"]].append(c)
    for job_id, got in received.items():
        assert len(got) <= len(intents[job_id]), f"{job_id}: {len(got)} calls, {len(intents[job_id])} intents"
        ok = defaultdict(int)
        for c in got:
            if c["result"] == "success":
                ok["delete" if c["delete_type"] == "delete" else "stop"] += 1
        assert ok["stop"] <= 1 and ok["delete"] == 1, (job_id, got)
    assert not sim.violations, sim.violation_log[:5]
    figures = {"run_id": run_id, "workers": workers, "victim": victim_id, "takeovers": len(takeovers),
               "handed_back": sum(1 for r in records if r.trigger == "handed_back"),
               "handed_over": handed_over, "records": len(records),
               "intents_by_worker": dict(Counter(r.worker for rs in intents.values() for r in rs)),
               "destructive_calls": len(sim.destructive_calls)}
    print(f"\nshared run: {figures}")
    return figures


def test_three_workers_share_a_run_and_one_is_killed_midway(pg_url: str, tmp_path: Path) -> None:
    with simulator(profile=PROFILE, seed=5) as (sim, url):  # type: ignore[arg-type]
        _seed(sim)
        runner = _start(tmp_path, "run", pg_url, url, ["run", "--yes", "--all", "--output", "json",
                                                        "--poll-interval", "0.2"])
        procs = [runner]
        _wait_for("the run to be recorded", lambda: _scalar(pg_url, "select count(*) from runs")
                  if runner.popen.poll() is None else True, procs)
        procs += [_start(tmp_path, f"worker{i}", pg_url, url, ["worker", "--poll-interval", "0.2"])
                  for i in (1, 2)]
        victim = procs[1]
        # Midway: once the victim has committed intents of its own (it holds tasks, some with requests out).
        _wait_for("the victim to act", lambda: _scalar(
            pg_url, "select count(*) from audit_records where worker like :w "
                    "and trigger in ('stop', 'delete')", w=victim.worker_like), procs)
        time.sleep(0.2)
        active_at_kill = _scalar(pg_url, "select count(*) from tasks where state not in "
                                         "('deleted', 'skipped', 'blocked', 'failed', 'timed_out')")
        victim.popen.send_signal(signal.SIGKILL)
        _finish(procs)
        logs = "\n".join(p.tail() for p in procs)
        assert victim.popen.returncode == -signal.SIGKILL
        # Exit 3: the ten yearly/monthly tasks are blocked, as policy says; the run is otherwise done.
        assert runner.popen.returncode == 3, logs
        assert procs[2].popen.returncode == 3, logs
        assert active_at_kill > 0, "the run was over before the kill: not midway"
        figures = _check_run(pg_url, sim, victim, procs)
    # Three workers in the trail: the run process, the survivor and the one killed.
    assert len(figures["workers"]) == 3, figures


def test_run_process_dies_after_sending_and_workers_finish_the_run(pg_url: str, tmp_path: Path) -> None:
    """The worst instant: stops sent and accepted, their outcome not yet committed. The takers must read the
    status and carry on (stop_accepted), never send the stop again."""
    with simulator(profile=PROFILE, seed=6) as (sim, url):  # type: ignore[arg-type]
        _seed(sim)
        runner = _start(tmp_path, "run", pg_url, url, ["run", "--yes", "--all", "--poll-interval", "0.2"],
                        DRS_TEARDOWN_CRASH_AT="after_send:stop:3")
        procs = [runner]
        _wait_for("the run to be recorded", lambda: _scalar(pg_url, "select count(*) from runs")
                  if runner.popen.poll() is None else True, procs)
        procs += [_start(tmp_path, f"worker{i}", pg_url, url, ["worker", "--poll-interval", "0.2"])
                  for i in (1, 2)]
        _finish(procs)
        logs = "\n".join(p.tail() for p in procs)
        assert runner.popen.returncode == -signal.SIGKILL, logs
        assert [p.popen.returncode for p in procs[1:]] == [3, 3], logs
        figures = _check_run(pg_url, sim, runner, procs)
        terminates = defaultdict(int)
        for c in sim.destructive_calls:
            if c["delete_type"] != "delete":
                terminates[c["job_id"]] += 1
    # Every stop went out once: the victim's last batch was reconciled by reading, not re-sent.
    assert set(terminates.values()) == {1}, terminates
    assert figures["takeovers"] >= 1


def test_a_worker_started_before_the_run_waits_for_it(pg_url: str) -> None:
    """Workers started alongside `run` (before it has recorded its run) wait for it rather than exit; a worker
    with nothing to do leaves at once. (Through the use-case layer, as a runbook would.)"""
    import asyncio
    import threading

    from orchestrator.selection import Selection
    from orchestrator.usecases import Teardown, work_runs
    from tests.kit import settings

    env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}
    with simulator(profile="fast") as (sim, url):
        sim.add_jobs(10, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        store = Store(pg_url)
        s = settings(url, pg_url, poll_interval=0.05)

        def record_a_run_later() -> None:
            time.sleep(1.0)
            td = Teardown(s, env, selection=Selection(all=True), consent="test", store=Store(pg_url))
            asyncio.run(td.plan())
            td.record()
            td.release()  # recorded, not executed here: the workers work it
        def work(wait: float) -> int:
            result = asyncio.run(work_runs(store, s, env, {}, None, stop_event=asyncio.Event(), wait_for_runs=wait))
            return result.exit_code

        planner = threading.Thread(target=record_a_run_later)
        planner.start()
        started = time.monotonic()
        code = work(30)
        planner.join()
        assert code == 0
        assert 1.0 <= time.monotonic() - started < 30
        run = store.runs()[0]
        assert run.status == "finished" and store.state_counts(run.id) == {"deleted": 10}
        started = time.monotonic()
        assert work(0) == 0
        assert time.monotonic() - started < 5
        store.close()


def test_a_worker_waits_for_a_run_still_being_planned(pg_url: str) -> None:
    """A worker started once `run` has recorded its run, while that run is still reading its plan, waits for
    the plan and joins (it used to leave at once with "nothing left", leaving the run to its one process)."""
    import asyncio
    import threading

    from orchestrator.selection import Selection
    from orchestrator.usecases import Teardown, work_runs
    from tests.kit import settings

    env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}
    with simulator(profile="fast") as (sim, url):
        sim.add_jobs(100, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        store = Store(pg_url)
        s = settings(url, pg_url, poll_interval=0.05)
        slow = settings(url, pg_url, poll_interval=0.05, rate=10.0)  # ten detail calls: about a second of plan

        def plan_slowly() -> None:
            td = Teardown(slow, env, selection=Selection(all=True), consent="test", store=Store(pg_url))
            asyncio.run(td.plan())
            td.record()
            td.release()  # recorded, not executed here: the worker works it

        planner = threading.Thread(target=plan_slowly)
        planner.start()
        deadline = time.monotonic() + 30
        while not store.runs() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.status for r in store.runs()] == ["planning"]  # the worker starts while the plan is read
        result = asyncio.run(work_runs(store, s, env, {}, None, stop_event=asyncio.Event(), wait_for_runs=0))
        planner.join()
        run = store.runs()[0]
        assert result.exit_code == 0 and run.id in result.summaries
        assert run.status == "finished" and store.state_counts(run.id) == {"deleted": 100}
        store.close()
