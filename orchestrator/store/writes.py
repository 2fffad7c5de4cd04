"""Writing runs, tasks and the trail: every state change and its audit records in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, exists, select, update
from sqlalchemy.orm import Session

from orchestrator.lifecycle import TaskState
from orchestrator.store import audit
from orchestrator.store.records import Change, Context, Event, chain
from orchestrator.store.schema import ApiCall, AuditRecord, Run, Task
from orchestrator.store.sessions import WORKING, StoreCore, retrying
from orchestrator.wire import Exchange

RUNS = cast(Table, Run.__table__)
TASKS = cast(Table, Task.__table__)
# What a task row gets when the planner leaves it out.
TASK_DEFAULTS: dict[str, Any] = {
    "name": None, "db_use_type": None, "engine_type": None, "parent_job_id": None, "order_id": None,
    "plan_status": None, "state": TaskState.PENDING, "last_status": None, "last_observed_at": None,
    "reason": None, "error_code": None, "stop_attempts": 0, "forced": False, "busy_retries": 0, "resends": 0,
    "phase_started_at": None, "next_check_at": None, "unchanged_polls": 0, "lease_owner": None,
    "lease_expires_at": None, "target": None, "project_id": None, "child_kind": None, "gtid": None,
    "incre_start_position": None, "bss_resource_ids": None,
}


class TrailWrites(StoreCore):
    """Runs, tasks and their audit records."""

    def _append(self, s: Session, run_id: str, ctx: Context, events: Sequence[Event], now: datetime) -> None:
        if not events:
            return
        # Lock the run row: the chain head is read and advanced under it, so concurrent writers serialise.
        head = s.execute(self._locking(select(RUNS.c.head_seq, RUNS.c.head_hash)
                                       .where(RUNS.c.id == run_id))).one()
        rows, seq, prev = chain(run_id, head.head_seq, head.head_hash, ctx, events, now)
        self._insert(s, "audit_records", rows)
        s.execute(update(RUNS).where(RUNS.c.id == run_id).values(head_seq=seq, head_hash=prev))

    def _task_rows(self, run_id: str, tasks: Sequence[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        return [{**TASK_DEFAULTS, "updated_at": now, **t, "run_id": run_id} for t in tasks]

    @retrying
    def create_run(self, run: Run, tasks: Sequence[dict[str, Any]], ctx: Context, events: Sequence[Event],
                   now: datetime) -> None:
        """Insert a run, its tasks (column dicts) and their first records in one transaction.

        A run may start with no tasks, status "planning" (its selection, options and consent recorded before
        a single read): add_tasks adds them batch by batch, finish_planning sets it "running". A run this
        store owns (own_run before create_run) is recorded with its owner.
        """
        run.head_seq, run.head_hash = 0, audit.genesis(run.id)
        self._stamp_owner(run)
        with self.session() as s:
            s.add(run)
            s.flush()
            if tasks:
                self._insert(s, "tasks", self._task_rows(run.id, tasks, now))
            self._append(s, run.id, ctx, events, now)

    @retrying
    def discard_run(self, run_id: str) -> bool:
        """Remove a bare run (recorded before planning, whose selection matched nothing) in one transaction:
        only while it is still planning with nothing in its trail — no audit record, task or API call; False
        (nothing removed) otherwise. The append-only tables are never touched."""
        with self.session() as s:
            done = s.execute(delete(RUNS).where(
                RUNS.c.id == run_id, RUNS.c.status == "planning", RUNS.c.head_seq == 0,
                ~exists().where(AuditRecord.run_id == run_id), ~exists().where(Task.run_id == run_id),
                ~exists().where(ApiCall.run_id == run_id)))
            return bool(done.rowcount)

    @retrying
    def add_tasks(self, run_id: str, tasks: Sequence[dict[str, Any]], ctx: Context, events: Sequence[Event],
                  now: datetime) -> None:
        """Add a batch of tasks (column dicts; defaults for what is left out) and their records."""
        with self.session() as s:
            if tasks:
                self._insert(s, "tasks", self._task_rows(run_id, tasks, now))
            self._append(s, run_id, ctx, events, now)

    @retrying
    def finish_planning(self, run_id: str, ctx: Context, events: Sequence[Event], now: datetime,
                        **values: Any) -> bool:
        """A planning run becomes running (with `values` set on its row too), its records appended; False if it
        was not planning (nothing written)."""
        with self.session() as s:
            done = s.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status == "planning")
                             .values(status="running", **values))
            if not done.rowcount:
                return False
            self._append(s, run_id, ctx, events, now)
            return True

    @retrying
    def apply(self, run_id: str, ctx: Context, changes: Sequence[Change], exchanges: Sequence[Exchange],
              now: datetime, *, check_lease: bool = False, lease: timedelta | None = None) -> None:
        """Commit task updates, their audit records and the HTTP exchanges seen, all or nothing.

        check_lease: every updated task must still be ours (else LeaseLost, nothing committed); with `lease`,
        the same statement extends it, so a committed intent always leaves a full lease for the send.
        """
        # Group the updates by the set of columns they touch, and send each group as one set-based statement.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for ch in changes:
            row = dict(ch.fields)
            row["updated_at"] = now
            row["job_id"] = ch.job_id
            groups.setdefault(tuple(sorted(ch.fields)), []).append(row)
        lease_end = self._lease_end(now, lease) if check_lease and lease is not None else None
        with self.session() as s:
            for keys, rows in groups.items():
                self._update_tasks(s, run_id, ctx.worker, (*keys, "updated_at"), rows, check_lease, lease_end)
            self._append(s, run_id, ctx, [ch.event for ch in changes if ch.event is not None], now)
            self._add_exchanges(s, run_id, ctx.worker, exchanges)

    def _add_exchanges(self, s: Session, run_id: str | None, worker: str, exchanges: Sequence[Exchange]) -> None:
        if not exchanges:
            return
        self._insert(s, "api_calls", [
            {"run_id": run_id, "at": ex.at, "worker": worker, "api": ex.api, "method": ex.method, "path": ex.path,
             "http_status": ex.http_status, "request_id": ex.request_id, "duration_ms": ex.duration_ms,
             "job_ids": ",".join(ex.job_ids), "error_code": ex.error_code, "attempt": ex.attempt}
            for ex in exchanges])

    @retrying
    def record_exchanges(self, run_id: str | None, worker: str, exchanges: Sequence[Exchange]) -> None:
        if exchanges:
            with self.session() as s:
                self._add_exchanges(s, run_id, worker, exchanges)

    @retrying
    def append_events(self, run_id: str, ctx: Context, events: Sequence[Event], now: datetime) -> None:
        with self.session() as s:
            self._append(s, run_id, ctx, events, now)

    @retrying
    def set_run(self, run_id: str, **values: Any) -> None:
        with self.session() as s:
            s.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))

    @retrying
    def interrupt_run(self, run_id: str, ctx: Context, now: datetime, detail: str) -> bool:
        """Mark a planning/running run interrupted and record why, in one transaction; False if it was not."""
        with self.session() as s:
            done = s.execute(update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status.in_(WORKING))
                             .values(status="interrupted"))
            if not done.rowcount:
                return False
            self._append(s, run_id, ctx, [Event(trigger="run_interrupted", detail=detail)], now)
            return True

    @retrying
    def finish_run(self, run_id: str, ctx: Context, event: Event, now: datetime, exit_code: int) -> bool:
        """Mark the run finished and record why, once: with several workers, the first to see it done wins.

        The database is checked first (check_alive): a run whose file vanished is never reported finished.
        """
        self.check_alive()
        with self.session() as s:
            status = s.execute(self._locking(select(RUNS.c.status).where(RUNS.c.id == run_id))).scalar_one()
            if status == "finished":
                return False
            s.execute(update(RUNS).where(RUNS.c.id == run_id)
                      .values(status="finished", finished_at=now, exit_code=exit_code))
            self._append(s, run_id, ctx, [event], now)
            return True
