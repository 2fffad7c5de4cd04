"""The store's side of fair sharing on a real PostgreSQL: the run a worker serves and who counts as live (on the
database's clock), hand-backs that never touch a task in an intent state nor one another worker holds, claims
that prefer whole targets; the engine's Leases never handing back a task whose request is in flight; migration
0003 on SQLite and PostgreSQL; and SQLite runs, single-owner, unchanged."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text

from orchestrator.clock import ManualClock
from orchestrator.engine import Tuning
from orchestrator.engine.claims import Leases
from orchestrator.lifecycle import TaskState
from orchestrator.store.db import HEAD_REVISION, alembic_config, current_revision, make_engine, upgrade
from orchestrator.store.repo import Context, Store
from tests.store.kit import NOW, job_id, new_run, task

LEASE = timedelta(seconds=30)


def ctx(worker: str) -> Context:
    return Context(actor={"os_user": "test"}, worker=worker, ticket="CHG-15")


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = Store(pg_url)
    yield s
    s.close()


def make_run(store: Store, targets: dict[str | None, int]) -> tuple[str, dict[str | None, list[str]]]:
    run = new_run(status="running")
    jobs = {t: [job_id(i) for i in range(n)] for t, n in targets.items()}
    store.create_run(run, [task(j, target=t) for t, js in jobs.items() for j in js], ctx("planner"), [], NOW)
    return run.id, jobs


def register(store: Store, *workers: str) -> None:
    for w in workers:
        store.register_worker(w, "host", 1, datetime.now(UTC))


def test_live_workers_are_those_on_the_run_or_between_runs_with_a_fresh_heartbeat(store: Store) -> None:
    run_id, _ = make_run(store, {None: 60})
    other_run, _ = make_run(store, {None: 5})
    register(store, "a", "b", "stale", "done", "elsewhere")
    now = datetime.now(UTC)
    assert len(store.claim(run_id, "a", now, LEASE, 30)) == 30
    store.share_view(other_run, "elsewhere", now, LEASE)  # serves another run
    store.worker_finished("done", now)
    with store.engine.begin() as conn:  # a heartbeat older than a lease, on the database's clock
        conn.execute(text("update workers set heartbeat_at = now() - interval '31 seconds' where id = 'stale'"))
    view = store.share_view(run_id, "a", now, LEASE)
    # b has just started (between runs) and counts; a holds 30; the rest nobody holds.
    assert (view.unfinished, view.held, view.free, dict(view.loads)) == (60, 30, 30, {"a": 30, "b": 0})
    # A worker holding a live lease counts whatever its row says (here: it never registered).
    assert len(store.claim(run_id, "ghost", now, LEASE, 10)) == 10
    assert dict(store.share_view(run_id, "b", now, LEASE).loads) == {"a": 30, "b": 0, "ghost": 10}
    # share_view recorded the run each asking worker serves; release puts a worker between runs again.
    runs = dict(store.engine.connect().execute(text("select id, run_id from workers")).all())
    assert (runs["a"], runs["b"], runs["elsewhere"]) == (run_id, run_id, other_run)
    store.release(run_id, "a")
    assert store.engine.connect().execute(text("select run_id from workers where id = 'a'")).scalar() is None


def test_hand_back_gives_only_our_tasks_at_rest_and_records_each(store: Store) -> None:
    run_id, jobs = make_run(store, {None: 8})
    ids = jobs[None]
    register(store, "a", "b")
    now = datetime.now(UTC)
    assert len(store.claim(run_id, "a", now, LEASE, 6)) == 6
    assert len(store.claim(run_id, "b", now, LEASE, 2)) == 2
    with store.engine.begin() as conn:  # intents committed: a stop and a delete whose answers are not in
        conn.execute(text("update tasks set state = 'stopping' where job_id = :j"), {"j": ids[0]})
        conn.execute(text("update tasks set state = 'deleting' where job_id = :j"), {"j": ids[1]})
        conn.execute(text("update tasks set state = 'releasing' where job_id = :j"), {"j": ids[2]})
    offered: list[str] = []

    def everything(held: list) -> list[str]:
        offered.extend(t.job_id for t in held)
        return [t.job_id for t in held] + [ids[6], ids[7]]  # b's tasks too, if it could

    given = store.hand_back(run_id, ctx("a"), everything, now, "handed back: over our fair share 3")
    assert offered == ids[2:6]  # never the intents, never another worker's
    assert given == set(ids[2:6])
    owners = {t.job_id: t.lease_owner for t in store.tasks(run_id)}
    assert [owners[j] for j in ids] == ["a", "a", None, None, None, None, "b", "b"]
    records = [r for r in store.records(run_id) if r.trigger == "handed_back"]
    assert sorted(r.job_id for r in records) == sorted(ids[2:6])
    assert {(r.worker, r.detail) for r in records} == {("a", "handed back: over our fair share 3")}
    assert {r.job_id: (r.from_state, r.to_state) for r in records}[ids[2]] == ("releasing", "releasing")
    assert store.verify(run_id).ok
    # The tasks given back are claimable at once (no lease to run out), by anyone.
    assert store.claimable_count(run_id, now) == 4
    assert store.hand_back(run_id, ctx("a"), lambda held: [], now, "x") == set()


def test_claims_prefer_our_targets_then_targets_nobody_holds(store: Store) -> None:
    run_id, jobs = make_run(store, {"t1": 10, "t2": 10, "t3": 10})
    register(store, "a", "b")
    now = datetime.now(UTC)
    # b holds t2 (all of it); a holds one task of t1.
    with store.engine.begin() as conn:
        conn.execute(text("update tasks set lease_owner = 'b', lease_expires_at = now() + interval '30 seconds' "
                          "where target = 't2'"))
        conn.execute(text("update tasks set lease_owner = 'a', lease_expires_at = now() + interval '30 seconds' "
                          "where job_id = :j"), {"j": jobs["t1"][0]})
    view = store.share_view(run_id, "a", now, LEASE)
    assert (dict(view.mine), view.others) == ({"t1": 1}, frozenset({"t2"}))
    got = store.claim(run_id, "a", now, LEASE, 12, prefer=({"t1"}, {"t2"}))
    assert [t.target for t in got] == ["t1"] * 9 + ["t3"] * 3
    # Once only targets others hold are left, they are claimed too (last).
    with store.engine.begin() as conn:
        conn.execute(text("update tasks set lease_owner = null where target = 't2' and job_id <> :j"),
                     {"j": jobs["t2"][0]})
    got = store.claim(run_id, "a", now, LEASE, 100, prefer=({"t1", "t3"}, {"t2"}))
    assert Counter(t.target for t in got) == {"t3": 7, "t2": 9}


def test_the_engine_never_hands_back_a_task_in_flight(store: Store) -> None:
    run_id, jobs = make_run(store, {None: 40})
    ids = jobs[None]
    register(store, "a", "b")
    clock = ManualClock(datetime.now(UTC))
    leases = Leases(store, run_id, ctx("a"), Tuning(claim_size=100), clock, shared=True, stats=Counter())
    # a is alone on the run as it starts (b has not looked at it yet: between runs, it counts too).
    got = leases.claim()
    assert leases.share == 20 and len(got) == 20 and not leases.claim_more
    with store.engine.begin() as conn:  # a claimed alone, earlier: it holds everything
        conn.execute(text("update tasks set lease_owner = 'a', lease_expires_at = now() + interval '30 seconds'"))
    leases.claim()
    assert leases.excess == 20  # b has nothing: it can take a whole share
    flying = set(ids[10:40])
    with leases.sending(flying):
        given = leases.take_lost(ids)
        assert given and not given & flying and len(given) == 10
        assert leases.in_flight == flying
    assert leases.in_flight == set()
    assert leases.excess == 0  # one hand-back per count: the next comes with the next heartbeat
    assert leases.take_lost(ids) == set()
    assert leases.stats["handed_back"] == 10
    owners = Counter(t.lease_owner for t in store.tasks(run_id))
    assert owners == {"a": 30, None: 10}
    assert store.verify(run_id).ok


def test_a_heartbeat_counts_the_share_again(store: Store) -> None:
    run_id, _ = make_run(store, {None: 30})
    register(store, "a")
    clock = ManualClock(datetime.now(UTC))
    tuning = Tuning(claim_size=100, lease_seconds=3)
    leases = Leases(store, run_id, ctx("a"), tuning, clock, shared=True, stats=Counter())
    assert len(leases.claim()) == 30 and leases.excess == 0

    async def one_beat() -> None:
        beats = asyncio.ensure_future(leases.heartbeats(lambda: set(), lambda: set()))
        register(store, "b", "c")  # two workers join
        await asyncio.sleep(0)
        clock.advance(tuning.lease_check)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if leases.excess:
                break
        beats.cancel()

    asyncio.run(one_beat())
    assert (leases.share, leases.excess) == (10, 20)


# -- migration 0003, SQLite unchanged ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"  # type: ignore[str-bytes-safe]
    return str(request.getfixturevalue("pg_url"))


def test_0003_adds_the_run_a_worker_serves_and_goes_back(url: str) -> None:
    engine = make_engine(url)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(text("insert into workers (id, host, pid, started_at, heartbeat_at) "
                          "values ('w', 'h', 1, :t, :t)"), {"t": NOW})
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION == "0004"
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # the models and the migrations agree
        assert conn.execute(text("select id, run_id from workers")).all() == [("w", None)]
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert current_revision(engine) == "0002"
    upgrade(engine)
    engine.dispose()


def test_sqlite_runs_stay_single_owner(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/one.db")  # type: ignore[str-bytes-safe]
    try:
        run_id, jobs = make_run(store, {None: 250})
        leases = Leases(store, run_id, ctx("a"), Tuning(claim_size=100), ManualClock(NOW), shared=False,
                        stats=Counter())
        assert len(leases.claim()) == 250  # everything at once, no share, no batch
        assert (leases.share, leases.excess, leases.claim_more) == (None, 0, False)
        assert leases.take_lost(jobs[None]) == set()
        assert not [r for r in store.records(run_id) if r.trigger == "handed_back"]
        assert Counter(t.state for t in store.tasks(run_id)) == {TaskState.PENDING: 250}
    finally:
        store.close()
