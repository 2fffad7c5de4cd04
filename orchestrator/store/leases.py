"""Task leases: which worker holds which task of a shared run.

A task belongs to the worker named in lease_owner. Ownership changes only under the row's lock (claims take it
with FOR UPDATE SKIP LOCKED where the database has row locks, every write by the owner re-checks lease_owner in
its WHERE), so it is never ambiguous. Expiry is what lets a live worker take a dead one's tasks; on PostgreSQL
it is measured on the database's clock, so workers on hosts with skewed clocks agree on when a lease ran out.

Sharing (engine/leases.py decides, this module counts and moves rows): `share_view` records the run a worker
serves and counts the run's unfinished tasks, its live workers and who holds which target; `hand_back` gives
tasks back (lease cleared, one `handed_back` record each), never a task in an intent state (its request may be
on the wire, or its outcome is not known yet).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.lifecycle import ACTIVE, INTENTS
from orchestrator.store.records import Context, Event
from orchestrator.store.schema import Task, Worker
from orchestrator.store.sessions import StoreCore, retrying

# Active states with no request of ours outstanding: the only ones a task is handed back in.
AT_REST = tuple(s for s in ACTIVE if s not in INTENTS)


@dataclass(frozen=True)
class ShareView:
    """What a worker needs to know to take its fair share of a run (counted in one transaction)."""

    worker: str  # the asking worker
    unfinished: int  # the run's active tasks
    loads: Mapping[str, int]  # live worker on the run -> active tasks it holds (the asking worker included)
    free: int  # active tasks no live worker holds: anyone may claim them
    mine: Mapping[str | None, int] = field(default_factory=dict)  # target -> tasks the asking worker holds
    others: frozenset[str | None] = frozenset()  # targets another live worker holds tasks of

    @property
    def workers(self) -> int:
        return len(self.loads)

    @property
    def held(self) -> int:
        return self.loads.get(self.worker, 0)


@dataclass(frozen=True)
class HeldTask:
    """A task a worker holds at rest (no request of its outstanding), as the hand-back choice sees it."""

    job_id: str
    target: str | None = None
    family: bool = False  # a parent or a re-edit child: stays with whoever holds the rest of its family


class Leases(StoreCore):
    """Workers, claims, heartbeats."""

    @retrying
    def register_worker(self, worker: str, host: str, pid: int, now: datetime) -> None:
        """Record a worker process once (later calls only touch its heartbeat)."""
        with self.session() as s:
            known = s.get(Worker, worker)
            if known is None:
                s.add(Worker(id=worker, host=host, pid=pid, started_at=now, heartbeat_at=self._db_now(now),
                             finished_at=None, run_id=None))
            else:
                known.heartbeat_at, known.finished_at = self._db_now(now), None

    @retrying
    def worker_finished(self, worker: str, now: datetime) -> None:
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker)
                      .values(finished_at=now, heartbeat_at=self._db_now(now), run_id=None))

    @retrying
    def worker_waiting(self, worker: str, run_id: str | None, now: datetime) -> None:
        """A worker waiting for work on `run_id` (None: on any run) is alive and counts in that run's shares."""
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker)
                      .values(run_id=run_id, heartbeat_at=self._db_now(now), finished_at=None))

    @retrying
    def share_view(self, run_id: str, worker: str, now: datetime, lease: timedelta) -> ShareView:
        """Record that `worker` serves `run_id` (alive now), and count what sharing the run fairly needs.

        Live workers: those whose heartbeat (the database's clock) is within a lease and that have not finished,
        serving this run or between runs (a worker that just started, or finished its part, and looks for work),
        plus any holding an unexpired lease on one of the run's tasks, plus `worker` itself.
        """
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker)
                      .values(run_id=run_id, heartbeat_at=self._db_now(now), finished_at=None))
            rows = s.execute(select(Task.target, Task.lease_owner, func.count(),
                                    func.max(Task.lease_expires_at) >= self._db_now(now))
                             .where(Task.run_id == run_id, Task.state.in_(ACTIVE))
                             .group_by(Task.target, Task.lease_owner)).all()
            live = set(s.execute(select(Worker.id).where(
                Worker.finished_at.is_(None), Worker.heartbeat_at >= self._lease_end(now, -lease),
                or_(Worker.run_id == run_id, Worker.run_id.is_(None)))).scalars())
        mine: dict[str | None, int] = {}
        others: set[str | None] = set()
        loads = dict.fromkeys(live | {worker}, 0)
        free = 0
        for target, holder, n, unexpired in rows:
            if holder == worker:
                mine[target] = mine.get(target, 0) + n
                loads[worker] += n
            elif holder is not None and unexpired:
                others.add(target)
                loads[holder] = loads.get(holder, 0) + n
            else:
                free += n
        return ShareView(worker=worker, unfinished=sum(n for _, _, n, _ in rows), loads=loads, free=free,
                         mine=mine, others=frozenset(others))

    @retrying
    def hand_back(self, run_id: str, ctx: Context, choose: Callable[[list[HeldTask]], Collection[str]],
                  now: datetime, detail: str) -> set[str]:
        """Give back the tasks `choose` picks among those we hold at rest; returns the job ids given back.

        Only tasks whose state is not an intent are offered (under their row lock, so an intent committed
        meanwhile keeps its task); each one given back loses its lease and gets a `handed_back` record.
        """
        worker = ctx.worker
        with self.session() as s:
            stmt = (select(Task.id, Task.job_id, Task.target, Task.parent_job_id, Task.state, Task.last_status)
                    .where(Task.run_id == run_id, Task.lease_owner == worker, Task.state.in_(AT_REST))
                    .order_by(Task.id))
            rows = s.execute(self._locking(stmt, skip_locked=True)).all()
            parents = set(s.execute(select(Task.parent_job_id).where(
                Task.run_id == run_id, Task.parent_job_id.is_not(None))).scalars())
            chosen = set(choose([HeldTask(r.job_id, r.target, bool(r.parent_job_id) or r.job_id in parents)
                                 for r in rows]))
            picked = [r for r in rows if r.job_id in chosen]
            if not picked:
                return set()
            ids = [r.id for r in picked]
            for i in range(0, len(ids), 500):
                s.execute(update(Task).where(Task.id.in_(ids[i : i + 500]), Task.lease_owner == worker)
                          .values(lease_owner=None, lease_expires_at=None)
                          .execution_options(synchronize_session=False))
            self._append(s, run_id, ctx, [Event(trigger="handed_back", job_id=r.job_id, from_state=_value(r.state),
                                                to_state=_value(r.state), remote_status=r.last_status,
                                                detail=detail) for r in picked], now)
            return {r.job_id for r in picked}

    @retrying
    def claim(self, run_id: str, worker: str, now: datetime, lease: timedelta, limit: int | None,
              *, ignore_leases: bool = False, ctx: Context | None = None,
              prefer: tuple[Collection[str | None], Collection[str | None]] = ((), ())) -> list[Task]:
        """Take up to `limit` active tasks nobody holds, or whose lease ran out (SKIP LOCKED on PostgreSQL).

        Tasks this worker already holds are not returned again (see `held`), so repeated claims ramp up. With
        `ctx`, taking a task over from another worker whose lease ran out is recorded in the trail. `prefer`:
        (targets to take first, targets to take last); the rest come between, each in task order.
        """
        with self.session() as s:
            stmt = select(Task).where(Task.run_id == run_id, Task.state.in_(ACTIVE))
            if not ignore_leases:
                stmt = stmt.where(or_(Task.lease_owner.is_(None), Task.lease_expires_at < self._db_now(now)))
            first, last = prefer
            if first or last:
                stmt = stmt.order_by(case(*_targets_in(first, 0), *_targets_in(last, 2), else_=1))
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
            s.execute(update(Worker).where(Worker.id == worker).values(heartbeat_at=self._db_now(now)))
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
        """Let go of every task of the run we hold; the worker is between runs again (looking for work)."""
        with self.session() as s:
            s.execute(update(Task).where(Task.run_id == run_id, Task.lease_owner == worker)
                      .values(lease_owner=None, lease_expires_at=None))
            s.execute(update(Worker).where(Worker.id == worker, Worker.run_id == run_id).values(run_id=None))


def _targets_in(targets: Collection[str | None], rank: int) -> list[tuple[Any, int]]:
    """CASE branches ranking the tasks of these targets (None: the tasks without a target)."""
    named = sorted(t for t in targets if t is not None)
    out: list[tuple[Any, int]] = [(Task.target.in_(named), rank)] if named else []
    if None in targets:
        out.append((Task.target.is_(None), rank))
    return out


def _value(state: Any) -> str:
    return state.value if hasattr(state, "value") else str(state)
