"""One owner per run, with real processes: on SQLite an OS-released file lock, on PostgreSQL a compare-and-set
on the run row with a heartbeat. The status a user sees, and settling runs whose owner died."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from orchestrator.errors import RunBusy, StoreError
from orchestrator.store.repo import Event, Store
from orchestrator.store.schema import Run
from tests.store.kit import CTX, NOW, Child, job_id, new_run, record_run, task

ROUNDS = 25


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'own.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store(url)
    yield s
    s.close()


def test_two_processes_claiming_one_run_at_once_one_wins_and_the_loser_names_it(url: str, store: Store,
                                                                                 tmp_path: Path) -> None:
    a, b = Child(url, "a"), Child(url, "b")
    try:
        for n in range(ROUNDS):
            run_id = record_run(store)
            barrier = tmp_path / f"barrier-{n}"
            barrier.mkdir()
            a.send(f"take {run_id} {barrier} 2")
            b.send(f"take {run_id} {barrier} 2")
            results = {"a": a.read(), "b": b.read()}
            winners = [k for k, r in results.items() if r["won"]]
            assert len(winners) == 1, results
            loser = results["b" if winners == ["a"] else "a"]
            winner_pid = (a if winners == ["a"] else b).pid
            assert loser["exit_code"] == 1
            assert f"process {winner_pid} on {socket.gethostname()}" in loser["error"]
            assert f"test {winners[0]}" in loser["error"] and "since 20" in loser["error"]
            assert a.ask("drop")["dropped"] + b.ask("drop")["dropped"] == 1
            # Let go: the next one to ask gets it.
            assert a.ask(f"take {run_id}")["won"]
            a.ask("drop")
    finally:
        a.close()
        b.close()


def test_a_claim_is_freed_by_sigkill_and_the_run_shows_interrupted_naming_its_owner(url: str,
                                                                                    store: Store) -> None:
    run_id = record_run(store)
    store.finish_planning(run_id, CTX, [Event(trigger="planned")], NOW)
    child = Child(url, "doomed")
    assert child.ask(f"take {run_id}")["won"]
    run = store.run(run_id)
    assert run is not None and run.owner_pid == child.pid and run.owner_host == socket.gethostname()
    status = store.run_status(run)
    assert (status.status, status.alive) == ("running", True)
    with pytest.raises(RunBusy, match=f"process {child.pid} "), store.own_run(run_id, "me"):
        pass
    assert store.settle_dead_runs(CTX) == []  # alive: left alone
    child.kill(signal.SIGKILL)  # and reaped: a zombie's pid still answers
    run = store.run(run_id)
    assert run is not None and run.status == "running"  # as recorded; the status a user sees:
    status = store.run_status(run)
    assert status.status == "interrupted" and status.recorded == "running" and status.resumable
    assert f"process {child.pid} on {socket.gethostname()}" in (status.detail or "")
    assert "test doomed" in (status.detail or "")
    assert store.settle_dead_runs(CTX) == [run_id]
    run = store.run(run_id)
    assert run is not None and run.status == "interrupted"
    last = store.records(run_id)[-1]
    assert last.trigger == "run_interrupted" and f"process {child.pid}" in (last.detail or "")
    assert store.settle_dead_runs(CTX) == []
    assert store.verify(run_id).ok
    with store.own_run(run_id, "me", command="resume") as me:
        assert me.pid == os.getpid()
        store.set_run(run_id, status="running")  # what resume does once it holds the run
        assert store.run_status(store.run(run_id)).alive  # type: ignore[arg-type]


def test_the_next_command_records_a_dead_run_interrupted(url: str, store: Store) -> None:
    """A run whose owner died without a word (SIGKILL) is recorded interrupted by the next writing command
    (here resume's pick), on its row only: no record is added to its trail."""
    from orchestrator.usecases.resume import pick_run

    run_id = record_run(store)
    store.finish_planning(run_id, CTX, [Event(trigger="planned")], NOW)
    child = Child(url, "doomed")
    assert child.ask(f"take {run_id}")["won"]
    before = len(store.records(run_id))
    assert pick_run(store, None).status == "running"  # type: ignore[union-attr]  # alive: left as it is
    child.kill(signal.SIGKILL)
    picked = pick_run(store, None)
    assert picked is not None and picked.id == run_id and picked.status == "interrupted"
    assert store.run(run_id).status == "interrupted"  # type: ignore[union-attr]
    assert len(store.records(run_id)) == before and store.verify(run_id).ok


def test_a_new_run_is_owned_from_its_first_row_and_planned_in_batches(store: Store) -> None:
    run = new_run(status="planning")
    jobs = [job_id(i) for i in range(250)]
    with store.own_run(run.id, CTX.worker, command="run"):
        store.create_run(run, [], CTX, [Event(trigger="run_started", detail="consent=test")], NOW)
        row = store.run(run.id)
        assert row is not None and row.status == "planning" and row.owner == CTX.worker
        assert [r.id for r in store.unfinished_runs()] == [run.id]
        assert store.run_status(row).status == "planning"
        for i in range(0, 250, 100):
            batch = jobs[i : i + 100]
            store.add_tasks(run.id, [task(j, target="bj4") for j in batch], CTX,
                            [Event(trigger="plan", job_id=j, to_state="pending") for j in batch], NOW)
        assert store.finish_planning(run.id, CTX, [Event(trigger="planned", detail="250 tasks")], NOW)
        assert not store.finish_planning(run.id, CTX, [Event(trigger="planned")], NOW)  # once
    row = store.run(run.id)
    assert row is not None and row.status == "running" and row.owner_heartbeat is None  # let go
    tasks = store.tasks(run.id)
    assert [t.job_id for t in tasks] == jobs and {t.target for t in tasks} == {"bj4"}
    assert {t.stop_attempts for t in tasks} == {0}
    records = store.records(run.id)
    assert [r.trigger for r in records] == ["run_started", *["plan"] * 250, "planned"]
    v = store.verify(run.id)
    assert v.ok and v.records == 252
    # Overlap: another run over some of these tasks, in this project, is told which run holds them.
    assert [r.id for r in store.unfinished_runs_overlapping([jobs[3], job_id(999)], "p" * 32)] == [run.id]
    assert [r.id for r in store.unfinished_runs_overlapping([jobs[3]], None)] == [run.id]
    assert store.unfinished_runs_overlapping([jobs[3]], "q" * 32) == []
    assert store.unfinished_runs_overlapping([job_id(998)], "p" * 32) == []
    store.set_run(run.id, status="finished")
    assert store.unfinished_runs_overlapping(jobs, "p" * 32) == []


def test_two_stores_in_one_process_exclude_each_other(url: str, store: Store) -> None:
    run_id = record_run(store)
    other = Store(url)
    try:
        with store.own_run(run_id, "first"), pytest.raises(RunBusy, match=f"process {os.getpid()}"), \
                other.own_run(run_id, "second"):
            pass
        with other.own_run(run_id, "second"):
            pass
    finally:
        other.close()


def test_a_read_only_store_cannot_own_a_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    writer = Store(url)
    run_id = record_run(writer)
    writer.close()
    reader = Store(url, read_only=True)
    try:
        with pytest.raises(StoreError, match="read-only"), reader.own_run(run_id, "x"):
            pass
        assert reader.settle_dead_runs(CTX) == []
    finally:
        reader.close()


def test_a_finished_or_interrupted_run_shows_as_recorded(store: Store) -> None:
    for status in ("finished", "interrupted"):
        run_id = record_run(store, status=status)
        got = store.run_status(store.run(run_id))  # type: ignore[arg-type]
        assert (got.status, got.recorded, got.alive) == (status, status, False)


def test_a_run_recorded_running_by_a_tool_that_kept_no_owner_is_interrupted(store: Store) -> None:
    run_id = record_run(store, status="running")
    got = store.run_status(store.run(run_id))  # type: ignore[arg-type]
    assert got.status == "interrupted" and "not recorded" in (got.detail or "")


@pytest.mark.postgres
def test_postgresql_takes_over_an_owner_on_another_host_only_when_its_heartbeat_is_old(pg_url: str) -> None:
    store = Store(pg_url)
    run_id = record_run(store, status="running")
    # An owner on another host, seen a moment ago: alive (its pid means nothing here).
    with store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(
            owner="far:1:x", owner_pid=1, owner_host="far-away", owner_since=NOW, owner_command="run",
            owner_heartbeat=store.engine.dialect.name and NOW.replace(year=2999)))
    with pytest.raises(RunBusy, match="process 1 on far-away"), store.own_run(run_id, "me"):
        pass
    assert store.run_status(store.run(run_id)).status == "running"  # type: ignore[arg-type]
    # Its heartbeat older than the expiry: gone, taken over.
    with store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(owner_heartbeat=NOW - timedelta(days=1)))
    assert store.run_status(store.run(run_id)).status == "interrupted"  # type: ignore[arg-type]
    with store.own_run(run_id, "me"):
        row = store.run(run_id)
        assert row is not None and row.owner == "me" and row.owner_host == socket.gethostname()
    store.close()


@pytest.mark.postgres
def test_postgresql_owner_heartbeat_keeps_the_run_and_notices_a_takeover(pg_url: str) -> None:
    store = Store(pg_url)
    store.owner_expiry = timedelta(seconds=0.4)  # type: ignore[misc]
    run_id = record_run(store, status="running")
    with store.own_run(run_id, "me"):
        first = store.run(run_id).owner_heartbeat  # type: ignore[union-attr]
        for _ in range(200):
            store.check_alive()
            if store.run(run_id).owner_heartbeat != first:  # type: ignore[union-attr]
                break
            __import__("time").sleep(0.02)
        assert store.run(run_id).owner_heartbeat != first  # type: ignore[union-attr]
        store.set_run(run_id, owner="thief")  # another process took it over
        for _ in range(200):
            try:
                store.check_alive()
            except StoreError as exc:
                assert "taken over" in str(exc)
                break
            __import__("time").sleep(0.02)
        else:
            raise AssertionError("the takeover went unnoticed")
    store.close()


def test_one_lock_per_database_file_however_its_path_is_spelled(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    (tmp_path / "link.db").symlink_to(real)
    a = Store(f"sqlite:///{real}")
    b = Store(f"sqlite:///{tmp_path / 'link.db'}")
    try:
        run_id = record_run(a)
        with a.own_run(run_id, "a"), pytest.raises(RunBusy), b.own_run(run_id, "b"):
            pass
    finally:
        a.close()
        b.close()


def test_the_store_wide_lock_excludes_another_store_until_released(url: str, store: Store) -> None:
    # What serialises a new run's overlap check and its recording between processes, on SQLite and PostgreSQL.
    other = Store(url)
    try:
        with store.exclusive("new-runs", "first"):
            with pytest.raises(RunBusy), other.exclusive("new-runs", "second"):
                pass
            with other.exclusive("something-else", "second"):
                pass
        with other.exclusive("new-runs", "second"):
            pass
    finally:
        other.close()
