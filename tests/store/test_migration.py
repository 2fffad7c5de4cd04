"""Migration 0002 on a database written at 0001, on SQLite and PostgreSQL: data kept, chains still verify,
the trail still append-only, the new columns usable, room for longer state names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from orchestrator.lifecycle import TaskState
from orchestrator.store import audit
from orchestrator.store.db import HEAD_REVISION, alembic_config, current_revision, make_engine, upgrade
from orchestrator.store.repo import Change, Event, Store
from tests.store.kit import CTX

RUN = "0123456789abcdef0123456789abcdef"
JOB = "8f2bbba3-ae54-4ad6-987c-88bbdde8bcb9"
AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("pg_url"))


def _at_0001(url: str) -> Engine:
    """A database as the 0001 tool left it: a run with two chained records and a task."""
    engine = make_engine(url)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    prev = audit.genesis(RUN)
    rows = []
    for seq, trigger in ((1, "run_started"), (2, "plan")):
        rec = {"run_id": RUN, "seq": seq, "at": AT, "job_id": JOB if seq == 2 else None, "from_state": None,
               "to_state": "pending" if seq == 2 else None, "trigger": trigger, "remote_status": None,
               "outcome": None, "error_code": None, "request_ids": None, "actor": CTX.actor_json,
               "worker": CTX.worker, "ticket": "CHG-1", "reason": None, "detail": "old", "prev_hash": prev}
        rec["hash"] = prev = audit.record_hash(rec)
        rows.append(rec)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (id, created_at, status, project_id, endpoint, selection, options, actor, consent, "
            "head_seq, head_hash) VALUES (:id, :at, 'interrupted', 'p', 'e', '{}', '{}', '{}', 'test', 2, :head)"),
            {"id": RUN, "at": AT, "head": prev})
        conn.execute(text(
            "INSERT INTO tasks (run_id, job_id, planned_action, state, stop_attempts, forced, busy_retries, "
            "resends, unchanged_polls, updated_at) VALUES (:run, :job, 'stop_then_delete', 'releasing', 1, "
            "false, 0, 0, 0, :at)"), {"run": RUN, "job": JOB, "at": AT})
        for rec in rows:
            conn.execute(text(f"INSERT INTO audit_records ({', '.join(rec)}) "
                              f"VALUES ({', '.join(':' + k for k in rec)})"), rec)
    return engine


def test_0002_keeps_the_data_and_every_chain(url: str) -> None:
    engine = _at_0001(url)
    assert current_revision(engine) == "0001"
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # the models and the migrations agree
    engine.dispose()
    store = Store(url)
    try:
        v = store.verify(RUN)
        assert v.ok and v.records == 2, v.problem
        [t] = store.tasks(RUN)
        assert (t.state, t.stop_attempts, t.gtid, t.target, t.child_kind, t.bss_resource_ids) == \
            (TaskState.RELEASING, 1, None, None, None, None)
        run = store.run(RUN)
        assert run is not None and run.owner is None and run.targets is None
        # The new columns, written the way the engine writes (a set-based update), and an event with values.
        store.apply(RUN, CTX, [Change(JOB, {"gtid": "3e11fa47:1-5", "incre_start_position": "bin.000003:154",
                                            "bss_resource_ids": ["r-1", "r-2"], "child_kind": "reedit",
                                            "target": "bj4"},
                                      Event(trigger="breakpoint", job_id=JOB,
                                            values={"gtid": "3e11fa47:1-5"}))], [], AT)
        [t] = store.tasks(RUN)
        assert (t.gtid, t.incre_start_position, t.bss_resource_ids, t.child_kind, t.target) == \
            ("3e11fa47:1-5", "bin.000003:154", ["r-1", "r-2"], "reedit", "bj4")
        store.set_run(RUN, targets=[{"label": "bj4", "project_id": "p"}])
        assert store.run(RUN).targets == [{"label": "bj4", "project_id": "p"}]  # type: ignore[union-attr]
        assert store.verify(RUN).ok
        # Still append-only after SQLite rebuilt the table.
        for sql in ("UPDATE audit_records SET detail = 'x'", "DELETE FROM audit_records"):
            with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
                conn.execute(text(sql))
        # A state name of 20 characters fits, in the tasks and in the trail.
        long = "u" * 20
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE tasks SET state = :s"), {"s": long})
            conn.execute(text(
                "INSERT INTO audit_records (run_id, seq, at, from_state, to_state, trigger, actor, worker, "
                "prev_hash, hash) VALUES (:r, 99, :at, :s, :s, 't', 'a', 'w', 'p', 'h')"),
                {"r": RUN, "at": AT, "s": long})
    finally:
        store.close()


def test_0002_downgrades_and_upgrades_again(url: str) -> None:
    engine = _at_0001(url)
    upgrade(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert current_revision(engine) == "0001"
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()
    store = Store(url)
    assert store.verify(RUN).ok
    store.close()

