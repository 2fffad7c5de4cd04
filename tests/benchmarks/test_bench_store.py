"""Benchmark: the store alone, as the engine's hot path drives it. Run on demand:

    pytest -m bench tests/benchmarks/test_bench_store.py -s

A run of 10,000 tasks (BENCH_STORE_TASKS) is recorded, then every task goes through the five transitions of a
teardown (pending → stopping → releasing → deletable → deleting → deleted), committed the way the engine commits
them: one `apply` per batch of 100 tasks, each change with its audit record, a few HTTP exchanges per commit,
intents with the lease checked. Printed, for SQLite and PostgreSQL: transitions committed per second, and this
process's CPU time per 1,000 transitions (steadier than the wall on a shared machine; on PostgreSQL it leaves out
the server's work). The only asserts are about correctness (every task deleted, one intact chain).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.lifecycle import TaskState
from orchestrator.store.repo import Change, Context, Event, Store
from orchestrator.store.schema import Run
from orchestrator.wire import Exchange

pytestmark = pytest.mark.bench

N = int(os.environ.get("BENCH_STORE_TASKS", "10000"))
BATCH = 100
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
STEPS = [(TaskState.PENDING, TaskState.STOPPING, "stop", True),
         (TaskState.STOPPING, TaskState.RELEASING, "stop_accepted", False),
         (TaskState.RELEASING, TaskState.DELETABLE, "released", False),
         (TaskState.DELETABLE, TaskState.DELETING, "delete", True),
         (TaskState.DELETING, TaskState.DELETED, "delete_accepted", False)]


def _task(run_id: str, job_id: str) -> dict[str, Any]:
    return {"run_id": run_id, "job_id": job_id, "name": f"bench-{job_id[:8]}", "db_use_type": "sync",
            "engine_type": "mysql", "parent_job_id": None, "order_id": None, "planned_action": "stop_then_delete",
            "plan_status": "INCRE_TRANSFER_STARTED", "state": TaskState.PENDING,
            "last_status": "INCRE_TRANSFER_STARTED", "last_observed_at": NOW, "reason": None, "error_code": None,
            "stop_attempts": 0, "forced": False, "busy_retries": 0, "resends": 0, "phase_started_at": NOW,
            "next_check_at": NOW, "unchanged_polls": 0, "lease_owner": None, "lease_expires_at": None,
            "updated_at": NOW}


def _measure(url: str) -> dict[str, float]:
    store = Store(url)
    ctx = Context(actor={"os_user": "bench", "host": "bench", "tool": "drs-teardown"}, worker="bench:1:abc",
                  ticket="CHG-1", reason="benchmark")
    run_id = uuid.uuid4().hex
    jobs = [f"{i:08x}-0000-4000-8000-{uuid.uuid4().hex[:12]}" for i in range(N)]
    run = Run(id=run_id, created_at=NOW, finished_at=None, status="running", project_id="p" * 32,
              endpoint="http://127.0.0.1:1", selection={"all": True}, options={}, actor=ctx.actor,
              ticket=ctx.ticket, reason=ctx.reason, consent="bench", plan_hash=None, exit_code=None,
              head_hash="")
    started = time.perf_counter()
    store.create_run(run, [_task(run_id, j) for j in jobs], ctx,
                     [Event(trigger="plan", job_id=j, to_state="pending") for j in jobs], NOW)
    recorded = time.perf_counter() - started
    store.claim(run_id, ctx.worker, NOW, LEASE, None)
    started, cpu = time.perf_counter(), time.process_time()
    commits = 0
    for source, dest, trigger, intent in STEPS:
        for i in range(0, N, BATCH):
            batch = jobs[i : i + BATCH]
            now = NOW + timedelta(seconds=commits)
            changes = [Change(j, {"state": dest, "last_status": "RELEASE_RESOURCE_STARTED", "last_observed_at": now,
                                  "next_check_at": now + timedelta(seconds=2), "unchanged_polls": 0},
                              Event(trigger=trigger, job_id=j, from_state=source.value, to_state=dest.value,
                                    remote_status="RELEASE_RESOURCE_STARTED", request_ids=("req-1",)))
                       for j in batch]
            exchanges = [Exchange(at=now, api="batch-status", method="POST", path="/v3/p/jobs/batch-status",
                                  http_status=200, request_id="req-1", duration_ms=20.0, job_ids=tuple(batch),
                                  error_code=None, attempt=1)]
            store.apply(run_id, ctx, changes, exchanges, now, check_lease=intent, lease=LEASE if intent else None)
            commits += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    transitions = N * len(STEPS)
    assert {t.state for t in store.tasks(run_id)} == {TaskState.DELETED}
    verified = time.perf_counter()
    v = store.verify(run_id)
    verify_wall = time.perf_counter() - verified
    assert v.ok and v.records == 2 * N + transitions - N, v.problem
    store.close()
    return {"record_s": recorded, "wall_s": wall, "transitions": transitions, "per_s": transitions / wall,
            "commits": commits, "verify_s": verify_wall,
            "cpu_ms_per_1000": cpu / transitions * 1e6}


def _print(kind: str, r: dict[str, float]) -> None:
    print(f"\nBENCH store {kind}: {N} tasks recorded in {r['record_s']:.2f} s; {r['transitions']:.0f} transitions "
          f"in {r['commits']:.0f} commits, {r['wall_s']:.2f} s = {r['per_s']:,.0f} transitions/s, "
          f"{r['cpu_ms_per_1000']:.0f} ms of this process's CPU per 1,000; "
          f"verify {r['verify_s']:.2f} s")


def test_bench_store_sqlite(tmp_path: Any) -> None:
    _print("sqlite", _measure(f"sqlite:///{tmp_path / 'bench.db'}"))


@pytest.mark.postgres
def test_bench_store_postgres(pg_url: str) -> None:
    _print("postgresql", _measure(pg_url))
