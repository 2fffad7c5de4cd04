"""The store on a real PostgreSQL (a fresh database per test): migrations, the append-only trail, claims
with SKIP LOCKED, leases on the database clock, takeover, LeaseLost, one chain under concurrent writers, and
the CLI with --db postgresql+psycopg://… for every command."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from orchestrator import api
from orchestrator.clock import RealClock
from orchestrator.engine import Engine, Tuning
from orchestrator.errors import LeaseLost, StoreError
from orchestrator.lifecycle import TaskState
from orchestrator.planning import Action, Plan, PlanItem, Selection
from orchestrator.simulator import ApiFaults, JobSpec, load_profile
from orchestrator.store.db import HEAD_REVISION, alembic_config, current_revision, make_engine, upgrade
from orchestrator.store.repo import Change, Context, Event, Store
from orchestrator.store.schema import Task
from orchestrator.usecases import actor_info, start_run
from tests.kit import PROJECT, TOKEN, cli, settings, simulator

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = Store(pg_url)
    yield s
    s.close()


def ctx(worker: str) -> Context:
    return Context(actor={"os_user": "test"}, worker=worker, ticket="CHG-7")


def job_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{uuid.uuid4().hex[:12]}"


def synthetic_run(store: Store, n: int = 50) -> tuple[str, list[str]]:
    items = tuple(PlanItem(job_id=job_id(i), action=Action.STOP_THEN_DELETE, reason="running",
                           status="INCRE_TRANSFER_STARTED") for i in range(n))
    plan = Plan(PROJECT, "http://127.0.0.1:1", Selection(all=True), items, NOW)
    run_id = start_run(store, plan, ctx("planner"), Tuning(), NOW, consent="test")
    return run_id, [i.job_id for i in items]


def sim_env(url: str) -> dict[str, str]:
    return {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
            "DRS_TEARDOWN_ENDPOINT": url}


# -- migrations and the append-only trail --------------------------------------------------------------------


def test_migrations_upgrade_an_empty_database_and_agree_with_the_models(pg_url: str) -> None:
    engine = make_engine(pg_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if the models and the migrations disagree
    upgrade(engine)  # current: a no-op
    engine.dispose()


@pytest.mark.parametrize("table", ["audit_records", "api_calls"])
@pytest.mark.parametrize("statement",
                         ["UPDATE {t} SET worker = 'x'", "DELETE FROM {t}", "TRUNCATE {t} CASCADE"])
def test_the_trail_is_append_only_on_postgresql(store: Store, table: str, statement: str) -> None:
    run_id, _ = synthetic_run(store, 3)
    with store.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO api_calls (run_id, at, worker, api, method, path, duration_ms, "
                          f"job_ids, attempt) VALUES ('{run_id}', now(), 'w', 'list', 'POST', '/', 1, '', "
                          "1)"))
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text(statement.format(t=table)))
    assert store.verify(run_id).ok


# -- claims and leases ---------------------------------------------------------------------------------------


def test_concurrent_claims_are_disjoint_and_in_batches(store: Store) -> None:
    run_id, jobs = synthetic_run(store, 200)
    barrier = threading.Barrier(4)
    got: dict[str, list[str]] = {}

    def claimer(worker: str) -> None:
        barrier.wait()
        mine: list[str] = []
        while batch := store.claim(run_id, worker, NOW, LEASE, 15):
            assert len(batch) <= 15
            mine += [t.job_id for t in batch]
        got[worker] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for mine in got.values() for j in mine]
    assert sorted(claimed) == sorted(jobs)  # each task once: SKIP LOCKED, never twice
    assert sum(1 for mine in got.values() if mine) >= 2
    owners = Counter(t.lease_owner for t in store.tasks(run_id))
    assert owners == Counter({w: len(m) for w, m in got.items() if m})


def test_a_live_lease_is_not_taken_even_by_a_worker_whose_clock_runs_ahead(store: Store) -> None:
    run_id, _ = synthetic_run(store, 5)
    real = datetime.now(UTC)
    assert len(store.claim(run_id, "a", real, LEASE, 10)) == 5
    # Expiry is judged on the database's clock: a worker an hour ahead does not see A's leases as expired.
    assert store.claim(run_id, "b", real + timedelta(hours=1), LEASE, 10) == []
    assert store.claimable_count(run_id, real + timedelta(hours=1)) == 0


def test_an_expired_lease_is_taken_over_and_the_old_owner_gets_lease_lost(store: Store) -> None:
    run_id, jobs = synthetic_run(store, 4)
    now = datetime.now(UTC)
    assert len(store.claim(run_id, "a", now, timedelta(seconds=0.2), 10)) == 4
    assert store.claim(run_id, "b", now, LEASE, 10) == []  # live

    time.sleep(0.3)
    taken = store.claim(run_id, "b", now, LEASE, 2, ctx=ctx("b"))
    assert [t.job_id for t in taken] == jobs[:2]
    takeovers = [r for r in store.records(run_id) if r.trigger == "takeover"]
    assert [(r.job_id, r.worker) for r in takeovers] == [(jobs[0], "b"), (jobs[1], "b")]
    assert "lease of worker a ran out" in (takeovers[0].detail or "")
    # A's intent for a task B now holds is refused, all or nothing: no row, no record, no exchange.
    head = store.run(run_id).head_seq  # type: ignore[union-attr]
    intents = [Change(j, {"state": TaskState.STOPPING}, Event(trigger="stop", job_id=j)) for j in jobs[:3]]
    with pytest.raises(LeaseLost):
        store.apply(run_id, ctx("a"), intents, [], now, check_lease=True, lease=LEASE)
    assert store.run(run_id).head_seq == head  # type: ignore[union-attr]
    assert {t.job_id: t.state for t in store.tasks(run_id)}[jobs[2]] is TaskState.PENDING
    assert store.not_ours(run_id, "a", jobs) == set(jobs[:2])
    # A's heartbeat renews what it still holds and says so; held() gives A its tasks back after a LeaseLost.
    assert store.heartbeat(run_id, "a", now, LEASE) == (set(jobs[2:]), set(jobs[2:]))
    assert [t.job_id for t in store.held(run_id, "a", now, LEASE)] == jobs[2:]
    store.apply(run_id, ctx("a"), intents[2:], [], now, check_lease=True, lease=LEASE)
    assert store.verify(run_id).ok


def test_an_intent_commit_extends_the_lease_it_checks(store: Store) -> None:
    run_id, jobs = synthetic_run(store, 1)
    now = datetime.now(UTC)
    store.claim(run_id, "a", now, timedelta(seconds=1), 1)
    before = store.tasks(run_id)[0].lease_expires_at
    store.apply(run_id, ctx("a"), [Change(jobs[0], {"state": TaskState.STOPPING}, Event(trigger="stop"))], [],
                now, check_lease=True, lease=timedelta(minutes=10))
    after = store.tasks(run_id)[0].lease_expires_at
    assert before is not None and after is not None and after - before > timedelta(minutes=9)


# -- one chain, many writers ---------------------------------------------------------------------------------


def test_the_chain_stays_one_chain_under_concurrent_writers(store: Store) -> None:
    run_id, jobs = synthetic_run(store, 80)
    workers = [f"w{i}" for i in range(8)]
    for i, w in enumerate(workers):
        for t in store.claim(run_id, w, datetime.now(UTC), LEASE, 10):
            assert t.job_id in jobs[i * 10 : i * 10 + 10]
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def writer(i: int, w: str) -> None:
        try:
            barrier.wait()
            mine = jobs[i * 10 : i * 10 + 10]
            for round_ in range(15):
                changes = [Change(j, {"unchanged_polls": round_}, Event(trigger="observe", job_id=j,
                                                                      detail=f"{w} round {round_}"))
                           for j in mine[round_ % 3 :: 3]]
                store.apply(run_id, ctx(w), changes, [], datetime.now(UTC), check_lease=True, lease=LEASE)
                store.append_events(run_id, ctx(w), [Event(trigger="note", detail=w)], datetime.now(UTC))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    records = store.records(run_id)
    v = store.verify(run_id)
    assert v.ok, v.problem
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert {r.worker for r in records} >= set(workers)
    assert sum(1 for r in records if r.trigger == "note") == 8 * 15


def test_a_run_is_finished_once_however_many_workers_see_it_done(store: Store) -> None:
    run_id, _ = synthetic_run(store, 1)
    barrier = threading.Barrier(6)
    results: list[bool] = []

    def finisher(i: int) -> None:
        barrier.wait()
        results.append(store.finish_run(run_id, ctx(f"w{i}"), Event(trigger="run_finished"), NOW, 0))

    threads = [threading.Thread(target=finisher, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert sum(1 for r in store.records(run_id) if r.trigger == "run_finished") == 1
    assert store.verify(run_id).ok


# -- the engine's lease paths, in process --------------------------------------------------------------------


class _StealingStore(Store):
    """Another worker takes a few tasks right after our first claim, before we commit any intent."""

    stolen: list[str]

    def claim(self, run_id: str, worker: str, now: datetime, lease: timedelta, limit: int | None,
              **kw: Any) -> list[Task]:
        rows = super().claim(run_id, worker, now, lease, limit, **kw)
        if rows and not getattr(self, "stolen", None):
            self.stolen = [t.job_id for t in rows[:5]]
            with self.session() as s:
                s.execute(update(Task).where(Task.run_id == run_id, Task.job_id.in_(self.stolen))
                          .values(lease_owner="thief",
                                  lease_expires_at=datetime.now(UTC) + timedelta(hours=1)))
        return rows


def _engine_run(sim_url: str, db: Store, tuning: Tuning, worker: str) -> tuple[Engine, api.RunSummary, str]:
    async def go() -> tuple[Engine, api.RunSummary, str]:
        s = settings(sim_url, db.url, poll_interval=tuning.poll_interval)
        conn = api.connect(s, {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN})
        clock = RealClock()
        async with api.make_client(conn, s, clock) as client:
            plan = await api.plan(client, Selection(all=True), sim_url, clock)
            c = Context(actor=actor_info(conn.identity), worker=worker)
            run_id = start_run(db, plan, c, tuning, clock.now(), consent="test")
            engine = Engine(db, client, c, tuning, clock, run_id, fresh=True)
            await engine.run(wait_for_all=False)
            return engine, api.summarize(db, run_id), run_id

    return asyncio.run(go())


def test_lease_lost_before_the_intent_means_no_request_for_that_task(pg_url: str) -> None:
    db = _StealingStore(pg_url)
    with simulator(profile="fast") as (sim, url):
        sim.add_jobs(30, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        tuning = Tuning(poll_interval=0.05, max_poll_interval=0.2, lease_seconds=30, claim_size=10)
        engine, summary, run_id = _engine_run(url, db, tuning, "victim")
        acted_on = {c["job_id"] for c in sim.destructive_calls}
    assert engine.stats["lease_lost"] >= 1
    assert not acted_on & set(db.stolen)  # the thief's tasks never got a request from us
    assert summary.counts == {"deleted": 25, "pending": 5}
    assert {t.job_id for t in db.tasks(run_id) if t.state is TaskState.PENDING} == set(db.stolen)
    assert db.verify(run_id).ok
    db.close()


class _DeafStore(Store):
    """The database stops answering heartbeats (everything else still works)."""

    def heartbeat(self, run_id: str, worker: str, now: datetime, lease: timedelta) -> set[str]:
        raise StoreError("heartbeat: connection refused")


def test_a_worker_whose_heartbeat_fails_abandons_requests_before_its_lease_could_lapse(pg_url: str) -> None:
    db = _DeafStore(pg_url)
    slow = replace(load_profile("fast"), faults={"batch-jobs": ApiFaults(latency_ms=900)})
    with simulator(profile=slow) as (sim, url):  # type: ignore[arg-type]
        sim.add_jobs(6, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        # Lease 0.9 s: heartbeats every 0.3 s (all failing); a request is given up 0.6 s after its intent.
        tuning = Tuning(poll_interval=1.2, max_poll_interval=1.2, lease_seconds=0.9, claim_size=10)
        engine, summary, run_id = _engine_run(url, db, tuning, "deaf")
        violations = dict(sim.violations)
    assert engine.stats["heartbeat_failed"] >= 1
    assert engine.stats["sends_abandoned"] >= 1 and engine.lease_doubt
    # The abandoned requests landed after all; reading the statuses reconciled every task, nothing was re-sent
    # blindly, and the service saw no broken rule.
    assert summary.counts == {"deleted": 6}
    assert not violations
    # Its leases were left to run out, not released: an abandoned request might still have been in flight.
    assert {t.lease_owner for t in db.tasks(run_id)} == {"deaf"}
    assert db.verify(run_id).ok
    db.close()


# -- the CLI with --db postgresql+psycopg://… ----------------------------------------------------------------


def test_every_command_works_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        sim.add_jobs(12, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        env = sim_env(url)
        db = ["--db", pg_url]
        r = cli([*db, "db", "upgrade"], env)
        assert r.exit_code == 0 and HEAD_REVISION in r.stderr
        r = cli([*db, "plan", "--all", "--output", "json"], env)
        assert r.exit_code == 0 and len(json.loads(r.stdout)["items"]) == 12
        r = cli([*db, "run", "--yes", "--all", "--poll-interval", "0.05", "--output", "json"], env)
        assert r.exit_code == 0, r.output
        run_id = json.loads(r.stdout)["run_id"]
        assert json.loads(r.stdout)["counts"] == {"deleted": 12}
        r = cli([*db, "status", "--output", "json"], env)
        assert r.exit_code == 0 and json.loads(r.stdout)["runs"][0]["status"] == "finished"
        r = cli([*db, "status", run_id[:8], "--output", "json"], env)
        assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"deleted": 12}
        r = cli([*db, "audit", run_id, "--format", "json"], env)
        assert r.exit_code == 0
        assert len({rec["worker"] for rec in json.loads(r.stdout)}) == 1  # one process did it all
        r = cli([*db, "verify", run_id, "--output", "json"], env)
        assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
        r = cli([*db, "report", run_id, "--html", str(tmp_path / "r.html")], env)
        assert r.exit_code == 0 and (tmp_path / "r.html").read_text().startswith("<!")
        r = cli([*db, "resume", run_id, "--output", "json"], env)
        assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"deleted": 12}
        r = cli([*db, "worker", "--output", "json"], env)
        assert r.exit_code == 0 and json.loads(r.stdout)["runs"] == []
        r = cli([*db, "worker", "feedbeef"], env)
        assert r.exit_code == 1 and "no run" in r.stderr


def test_worker_joins_an_interrupted_run_and_resume_works_on_postgresql(pg_url: str) -> None:
    """A run stopped before it started working is picked up by `worker` (reconciling from the store)."""
    with simulator(profile="fast") as (sim, url):
        sim.add_jobs(8, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        store = Store(pg_url)

        async def plan_only() -> str:
            s = settings(url, pg_url)
            conn = api.connect(s, {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN})
            async with api.make_client(conn, s, RealClock()) as client:
                plan = await api.plan(client, Selection(all=True), url, RealClock())
            return start_run(store, plan, ctx("gone"), Tuning(), datetime.now(UTC), consent="test")

        run_id = asyncio.run(plan_only())
        store.set_run(run_id, status="interrupted")
        env = sim_env(url)
        r = cli(["--db", pg_url, "worker", run_id, "--poll-interval", "0.05", "--output", "json"], env)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["runs"][0]["counts"] == {"deleted": 8}
        assert store.run(run_id).status == "finished"  # type: ignore[union-attr]
        assert {rec.worker for rec in store.records(run_id)} == {"gone", doc["worker"]}
        assert store.verify(run_id).ok
        store.close()


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    r = cli(["--db", f"sqlite:///{tmp_path / 'x.db'}", "worker"], {})
    assert r.exit_code == 1 and "PostgreSQL" in r.stderr


def test_worker_records_the_end_of_a_run_whose_finisher_died(pg_url: str) -> None:
    store = Store(pg_url)
    items = tuple(PlanItem(job_id=job_id(i), action=Action.SKIP, reason="already deleted", status="DELETED")
                  for i in range(3))
    plan = Plan(PROJECT, "http://127.0.0.1:9", Selection(all=True), items, NOW)
    # Every task settled, the run still open.
    run_id = start_run(store, plan, ctx("gone"), Tuning(), NOW, consent="test")
    env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
           "DRS_TEARDOWN_ENDPOINT": "http://127.0.0.1:9"}
    r = cli(["--db", pg_url, "worker", "--output", "json"], env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"][0]["counts"] == {"skipped": 3}
    assert store.run(run_id).status == "finished"  # type: ignore[union-attr]
    assert [rec.trigger for rec in store.records(run_id)][-1] == "run_finished"
    assert store.verify(run_id).ok
    store.close()


