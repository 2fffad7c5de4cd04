"""The PostgreSQL store: shared by workers on any hosts. Set-based updates, SKIP LOCKED claims, leases on the
database's clock, and one owner per run by compare-and-set on the run row, kept alive by a heartbeat."""

from __future__ import annotations

import enum
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    Integer,
    Interval,
    Select,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orchestrator.errors import LeaseLost, RunBusy
from orchestrator.lifecycle import ACTIVE
from orchestrator.store.base import Store
from orchestrator.store.connections import postgres_engine
from orchestrator.store.schema import Base, Run, Task
from orchestrator.store.status import Holder, pid_alive, this_host

TASKS: Table = Task.__table__  # type: ignore[assignment]
_ARRAY_ITEM: dict[str, Any] = {"Integer": Integer(), "Boolean": Boolean(), "Float": Float(),
                               "UTCDateTime": DateTime(timezone=True)}


def _raw(value: Any) -> Any:
    """A column value as the array element PostgreSQL gets (enums by value, datetimes in UTC, JSON as text)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


class PostgresStore(Store, dialect="postgresql"):
    """PostgreSQL: any number of workers on any hosts share a run through task leases."""

    shared = True
    # A run's owner whose heartbeat is older than this (on the database's clock) is gone.
    owner_expiry = timedelta(seconds=60)

    def _create_engine(self, url: URL) -> Engine:
        return postgres_engine(url, read_only=self.read_only)

    def _transient(self, exc: DBAPIError) -> bool:
        text = str(exc)
        return bool(exc.connection_invalidated) or "deadlock detected" in text or "could not serialize" in text

    def _insert(self, s: Session, table: str, rows: Sequence[dict[str, Any]]) -> None:
        # Core executemany (psycopg pipelines the INSERTs): measured against one INSERT … SELECT unnest(arrays),
        # it costs this process a fifth less CPU for the same wall time (the arrays are dumped element by element).
        if rows:
            s.execute(insert(Base.metadata.tables[table]), list(rows))

    def _update_tasks(self, s: Session, run_id: str, worker: str, keys: tuple[str, ...],
                      rows: list[dict[str, Any]], check_lease: bool, lease_end: Any) -> None:
        """One set-based UPDATE … FROM unnest(arrays) per group (an executemany of a hundred single-row UPDATEs
        costs twenty times as long)."""
        by_job = {r["job_id"]: r for r in rows}  # a task twice in one commit: the last change wins
        ids = bindparam("u_ids", list(by_job), type_=ARRAY(String(64)))
        cols = [func.unnest(bindparam("u_job_id", list(by_job), type_=ARRAY(String(64)))).label("job_id")]
        for k in keys:
            item = _ARRAY_ITEM.get(type(TASKS.c[k].type).__name__, Text())
            column = [_raw(r[k]) for r in by_job.values()]
            cols.append(func.unnest(bindparam(f"u_{k}", column, type_=ARRAY(item))).label(k))
        v = select(*cols).subquery("v")
        # job_id = ANY(ids) narrows the scan on the (run_id, job_id) index when the planner has statistics.
        stmt = update(TASKS).where(TASKS.c.run_id == run_id, TASKS.c.job_id == any_(ids),
                                   TASKS.c.job_id == v.c.job_id)
        if check_lease:
            stmt = stmt.where(TASKS.c.lease_owner == worker)
        values: dict[str, Any] = {k: cast(v.c[k], JSON) if isinstance(TASKS.c[k].type, JSON) else v.c[k]
                                  for k in keys}
        if lease_end is not None:
            values["lease_expires_at"] = lease_end
        result = s.connection().execute(stmt.values(values))
        if result.rowcount != len(by_job):
            raise LeaseLost(f"{len(by_job) - result.rowcount} task(s) of run {run_id} are no longer ours")

    def _db_now(self, now: datetime) -> Any:
        return func.statement_timestamp()

    def _lease_end(self, now: datetime, lease: timedelta) -> Any:
        return func.statement_timestamp() + literal(lease, Interval())

    def _locking(self, stmt: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        return stmt.with_for_update(skip_locked=skip_locked)

    # -- one owner per run: compare-and-set on the run row, a heartbeat ----------------------------------------

    def _holder_gone(self, run: Run, db_now: datetime) -> bool:
        if not run.owner or run.owner_heartbeat is None:
            return True
        if run.owner_host == this_host():
            return not pid_alive(run.owner_pid or 0)
        return db_now - run.owner_heartbeat > self.owner_expiry

    def _take_run(self, run_id: str, me: Holder) -> Callable[[], None]:
        with self.session() as s:
            run = s.execute(select(Run).where(Run.id == run_id).with_for_update()).scalar_one_or_none()
            if run is not None:
                db_now = s.execute(select(func.statement_timestamp())).scalar_one()
                holder = Holder.of_run(run)
                if holder is not None and holder.id != me.id and not self._holder_gone(run, db_now):
                    raise RunBusy(f"run {run_id} is being worked by {holder.describe()}; wait for it to finish "
                                  "or stop that process first")
                s.execute(update(Run).where(Run.id == run_id)
                          .values(**{**me.owner_columns(), "owner_heartbeat": func.statement_timestamp()}))
        beat = _Heartbeat(self, run_id, me.id, self.owner_expiry.total_seconds() / 4)
        beat.start()
        return beat.stop

    def _take_exclusive(self, name: str, me: Holder) -> Callable[[], None]:
        # A session-level advisory lock on a connection of its own, held for the block: the server drops it
        # with the connection if this process dies.
        key = int.from_bytes(hashlib.sha256(f"drs-teardown {name}".encode()).digest()[:8], "big", signed=True)
        conn = self.engine.connect()
        try:
            got = conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one()
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            raise RunBusy(f"{name} is held by another process")

        def release() -> None:
            try:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()
            except Exception:
                conn.invalidate()  # never hand a connection that may still hold the lock back to the pool
            finally:
                conn.close()

        return release

    def beat(self, run_id: str, holder: str) -> bool:
        """Renew the owner's heartbeat; False if the run is no longer ours (taken over after an expiry)."""
        with self.session() as s:
            done = s.execute(update(Run).where(Run.id == run_id, Run.owner == holder)
                             .values(owner_heartbeat=func.statement_timestamp()))
            return bool(done.rowcount) or s.get(Run, run_id) is None

    def _owner_alive(self, run: Run) -> bool:
        if run.id in self._owned:
            return True
        with self.session() as s:
            db_now = s.execute(select(func.statement_timestamp())).scalar_one()
            # Workers may carry a run on after its owner is gone: a live lease on an active task is life too.
            leased = s.execute(select(func.count()).select_from(Task).where(
                Task.run_id == run.id, Task.state.in_(ACTIVE), Task.lease_owner.is_not(None),
                Task.lease_expires_at > db_now)).scalar_one()
        return bool(leased) or not self._holder_gone(run, db_now)

    def _settle(self, run: Run, interrupt: Callable[[Any], bool]) -> bool:
        with self.session() as s:
            # The row lock serialises with _take_run; the compare-and-set in `interrupt` does the rest.
            s.execute(select(Run.id).where(Run.id == run.id).with_for_update())
            return interrupt(s)

    def check_alive(self) -> None:
        """LeaseLost if a run this store owns was taken over (its heartbeat lapsed and another process took it);
        the database connection itself is checked by every write."""
        for beat in _Heartbeat.running.get(id(self), []):
            if beat.lost:
                raise LeaseLost(f"run {beat.run_id} was taken over by another process after this one's heartbeat "
                                "lapsed; nothing more is sent")

    def _closed(self) -> None:
        for beat in list(_Heartbeat.running.get(id(self), [])):
            beat.stop()


class _Heartbeat(threading.Thread):
    """Keeps a run's owner alive on the database while its owner works it."""

    running: dict[int, list[_Heartbeat]] = {}

    def __init__(self, store: PostgresStore, run_id: str, holder: str, interval: float) -> None:
        super().__init__(name=f"owner-heartbeat-{run_id[:8]}", daemon=True)
        self.store, self.run_id, self.holder, self.interval = store, run_id, holder, max(interval, 0.05)
        self._stop_event = threading.Event()
        self.lost = False
        self.failures = 0

    def start(self) -> None:
        _Heartbeat.running.setdefault(id(self.store), []).append(self)
        super().start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                if not self.store.beat(self.run_id, self.holder):
                    self.lost = True
                    return
                self.failures = 0
            except Exception:
                self.failures += 1  # the engine's own writes will report a database that is gone

    def stop(self) -> None:
        self._stop_event.set()
        beats = _Heartbeat.running.get(id(self.store), [])
        if self in beats:
            beats.remove(self)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
