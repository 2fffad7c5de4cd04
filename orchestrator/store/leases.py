"""Task leases: which worker holds which task of a shared run.

A task belongs to the worker named in lease_owner. Ownership changes only under the row's lock (claims take it
with FOR UPDATE SKIP LOCKED where the database has row locks, every write by the owner re-checks lease_owner in
its WHERE), so it is never ambiguous. Expiry is what lets a live worker take a dead one's tasks; on PostgreSQL
it is measured on the database's clock, so workers on hosts with skewed clocks agree on when a lease ran out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.lifecycle import ACTIVE
from orchestrator.store.core import StoreCore, retrying
from orchestrator.store.models import Task, Worker
from orchestrator.store.records import Context, Event


class Leases(StoreCore):
    """Workers, claims, heartbeats."""

    @retrying
    def register_worker(self, worker: str, host: str, pid: int, now: datetime) -> None:
        """Record a worker process once (later calls only touch its heartbeat)."""
        with self.session() as s:
            known = s.get(Worker, worker)
            if known is None:
                s.add(Worker(id=worker, host=host, pid=pid, started_at=now, heartbeat_at=now,
                             finished_at=None))
            else:
                known.heartbeat_at, known.finished_at = now, None

    @retrying
    def worker_finished(self, worker: str, now: datetime) -> None:
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker).values(finished_at=now, heartbeat_at=now))

    @retrying
    def claim(self, run_id: str, worker: str, now: datetime, lease: timedelta, limit: int | None,
              *, ignore_leases: bool = False, ctx: Context | None = None) -> list[Task]:
        """Take up to `limit` active tasks nobody holds, or whose lease ran out (SKIP LOCKED on PostgreSQL).

        Tasks this worker already holds are not returned again (see `held`), so repeated claims ramp up. With
        `ctx`, taking a task over from another worker whose lease ran out is recorded in the trail.
        """
        with self.session() as s:
            stmt = select(Task).where(Task.run_id == run_id, Task.state.in_(ACTIVE))
            if not ignore_leases:
                stmt = stmt.where(or_(Task.lease_owner.is_(None), Task.lease_expires_at < self._db_now(now)))
            stmt = stmt.order_by(Task.id)
            if limit is not None:
                stmt = stmt.limit(limit)
            tasks = list(s.execute(self._locking(stmt, skip_locked=True)).scalars())
            taken = [Event(trigger="takeover", job_id=t.job_id, from_state=t.state.value,
                           to_state=t.state.value, remote_status=t.last_status,
                           detail=f"lease of worker {t.lease_owner} ran out at "
                                  f"{t.lease_expires_at.isoformat() if t.lease_expires_at else '?'}")
                     for t in tasks if t.lease_owner not in (None, worker)]
            self._stamp(s, [t.id for t in tasks], worker, now, lease)
            for t in tasks:
                s.expunge(t)
                t.lease_owner = worker
            if ctx is not None and taken:
                self._append(s, run_id, ctx, taken, now)
            return tasks

    @retrying
    def held(self, run_id: str, worker: str, now: datetime, lease: timedelta) -> list[Task]:
        """Every active task this worker holds, its lease renewed: the way back after a LeaseLost."""
        with self.session() as s:
            stmt = (select(Task)
                    .where(Task.run_id == run_id, Task.state.in_(ACTIVE), Task.lease_owner == worker)
                    .order_by(Task.id))
            tasks = list(s.execute(self._locking(stmt)).scalars())
            self._stamp(s, [t.id for t in tasks], worker, now, lease)
            for t in tasks:
                s.expunge(t)
            return tasks

    def _stamp(self, s: Session, ids: list[int], worker: str, now: datetime, lease: timedelta) -> None:
        # One UPDATE per 500 ids instead of an ORM flush per row.
        for i in range(0, len(ids), 500):
            s.execute(update(Task).where(Task.id.in_(ids[i : i + 500]))
                      .values(lease_owner=worker, lease_expires_at=self._lease_end(now, lease))
                      .execution_options(synchronize_session=False))

    @retrying
    def heartbeat(self, run_id: str, worker: str, now: datetime,
                  lease: timedelta) -> tuple[set[str], set[str]]:
        """Extend our leases; returns (the job ids renewed, the job ids of all active tasks we still hold)."""
        ours = (Task.run_id == run_id, Task.lease_owner == worker, Task.state.in_(ACTIVE))
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker).values(heartbeat_at=now))
            # Rows locked right now are skipped, not waited for: our own commit holding them extends their
            # lease itself, and a claimer holding them is taking them over: no lock-order deadlock with either.
            locked = self._locking(select(Task.id).where(*ours), skip_locked=True)
            renewed = s.execute(update(Task).where(Task.id.in_(locked.scalar_subquery()))
                                .values(lease_expires_at=self._lease_end(now, lease)).returning(Task.job_id)
                                .execution_options(synchronize_session=False))
            return set(renewed.scalars()), set(s.execute(select(Task.job_id).where(*ours)).scalars())

    @retrying
    def not_ours(self, run_id: str, worker: str, job_ids: Sequence[str]) -> set[str]:
        """Which of these tasks another worker holds now."""
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(job_ids), 500):
                out.update(s.execute(select(Task.job_id).where(
                    Task.run_id == run_id, Task.job_id.in_(job_ids[i : i + 500]),
                    or_(Task.lease_owner.is_(None), Task.lease_owner != worker))).scalars())
        return out

    @retrying
    def claimable_count(self, run_id: str, now: datetime) -> int:
        """Active tasks nobody holds, or whose lease ran out."""
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(Task).where(
                Task.run_id == run_id, Task.state.in_(ACTIVE),
                or_(Task.lease_owner.is_(None), Task.lease_expires_at < self._db_now(now)))).scalar_one())

    @retrying
    def release(self, run_id: str, worker: str) -> None:
        with self.session() as s:
            s.execute(update(Task).where(Task.run_id == run_id, Task.lease_owner == worker)
                      .values(lease_owner=None, lease_expires_at=None))
