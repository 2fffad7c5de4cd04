"""The store: every state change and its audit record in one transaction; leases for shared runs."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    Interval,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import LeaseLost, StoreError
from orchestrator.lifecycle import ACTIVE, TERMINAL, Step, outcome_of
from orchestrator.store import audit
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.models import ApiCall, AuditRecord, Run, Task, Worker
from orchestrator.wire import Exchange

SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format


def _sqlite_param(value: Any) -> Any:
    """What SQLAlchemy would bind on SQLite for our column types: UTC datetimes as its text format, enums by
    value; the rest as is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).strftime(SQLITE_DATETIME)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _insert_sql(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in columns)}) VALUES ({', '.join('?' * len(columns))})"


_PLAIN = (str, int, float, bool, type(None))


def _sqlite_executemany(s: Session, sql: str, rows: list[tuple[Any, ...]]) -> Any:
    # A commit stamps one `now` on thousands of rows: format each distinct datetime once.
    formatted: dict[datetime, str] = {}
    params = []
    for row in rows:
        out = []
        for v in row:
            if type(v) in _PLAIN:
                out.append(v)
            elif type(v) is datetime:
                text = formatted.get(v)
                if text is None:
                    text = formatted[v] = _sqlite_param(v)
                out.append(text)
            else:
                out.append(_sqlite_param(v))
        params.append(tuple(out))
    return s.connection().exec_driver_sql(sql, params)



@dataclass(frozen=True)
class Event:
    """A transition (or run-level event) to append to the trail."""

    trigger: str
    job_id: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    remote_status: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    request_ids: tuple[str, ...] = ()
    detail: str | None = None

    @classmethod
    def of(cls, step: Step, **kw: Any) -> Event:
        outcome = kw.pop("outcome", None)
        if outcome is None and step.dest in TERMINAL:
            outcome = outcome_of(step.dest)
        return cls(trigger=step.trigger, job_id=step.job_id, from_state=step.source.value,
                   to_state=step.dest.value, remote_status=step.remote_status, outcome=outcome, **kw)




@dataclass
class Change:
    """Column updates for one task, with the event that records why (None: bookkeeping only)."""

    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    event: Event | None = None


@dataclass(frozen=True)
class Context:
    """Who is writing: stamped on every audit record."""

    actor: dict[str, Any]
    worker: str
    ticket: str | None = None
    reason: str | None = None

    @property
    def actor_json(self) -> str:
        return json.dumps(self.actor, sort_keys=True, separators=(",", ":"))


def _retrying_db(fn: Any) -> Any:
    """Retry briefly on a busy/locked SQLite or a dropped PostgreSQL connection, then raise StoreError."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import time

        delay = 0.05
        for attempt in range(6):
            try:
                return fn(*args, **kwargs)
            except (OperationalError, DBAPIError) as exc:
                text = str(exc)
                # A deadlock or serialisation failure rolled the whole transaction back: safe to run it again.
                transient = exc.connection_invalidated or any(
                    m in text for m in ("locked", "busy", "deadlock detected", "could not serialize"))
                if not transient or attempt == 5:
                    raise StoreError(f"database error: {exc.orig or exc}") from exc
                time.sleep(delay)
                delay *= 2
            except SQLAlchemyError as exc:
                raise StoreError(f"database error: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Store:
    """Runs, tasks and the trail in one database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        try:
            self.engine: Engine = make_engine(url)
            if migrate:
                upgrade(self.engine)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open or migrate the database {_safe_url(url)}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- writing ----------------------------------------------------------------------------------------------

    def _append(self, session: Session, run_id: str, ctx: Context, events: Sequence[Event], now: datetime) -> None:
        if not events:
            return
        # Lock the run row: the chain head is read and advanced under it, so concurrent writers serialise.
        run = session.execute(select(Run).where(Run.id == run_id).with_for_update()).scalar_one()
        seq, prev = run.head_seq, run.head_hash
        rows: list[dict[str, Any]] = []
        for ev in events:
            seq += 1
            row: dict[str, Any] = {
                "run_id": run_id, "seq": seq, "at": now, "job_id": ev.job_id, "from_state": ev.from_state,
                "to_state": ev.to_state, "trigger": ev.trigger, "remote_status": ev.remote_status,
                "outcome": ev.outcome, "error_code": ev.error_code,
                "request_ids": ",".join(r for r in ev.request_ids if r) or None,
                "actor": ctx.actor_json, "worker": ctx.worker, "ticket": ctx.ticket, "reason": ctx.reason,
                "detail": ev.detail, "prev_hash": prev,
            }
            row["hash"] = prev = audit.record_hash(row)
            rows.append(row)
        if self.is_postgres:
            # Core executemany: thousands of records per commit must not cost an ORM flush each.
            session.execute(insert(AuditRecord.__table__), rows)
        else:
            _sqlite_executemany(session, _insert_sql("audit_records", list(rows[0])),
                                [tuple(r.values()) for r in rows])
        run.head_seq, run.head_hash = seq, prev

    @_retrying_db
    def create_run(self, run: Run, tasks: Sequence[dict[str, Any]], ctx: Context, events: Sequence[Event],
                   now: datetime) -> None:
        """Insert a run, its tasks (column dicts) and their first records in one transaction."""
        run.head_seq, run.head_hash = 0, audit.genesis(run.id)
        with self.session() as s:
            s.add(run)
            s.flush()
            if tasks:
                s.execute(insert(Task.__table__), list(tasks))
            self._append(s, run.id, ctx, events, now)

    @_retrying_db
    def apply(self, run_id: str, ctx: Context, changes: Sequence[Change], exchanges: Sequence[Exchange],
              now: datetime, *, check_lease: bool = False, lease: timedelta | None = None) -> None:
        """Commit task updates, their audit records and the HTTP exchanges seen, all or nothing.

        check_lease: every updated task must still be ours (else LeaseLost, nothing committed); with `lease`,
        the same statement extends it, so a committed intent always leaves a full lease for the send.
        """
        # Group the updates by the set of columns they touch, and send each group as one executemany.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for ch in changes:
            values = dict(ch.fields, updated_at=now)
            params = {f"v_{k}": v for k, v in values.items()}
            params.update(b_run=run_id, b_job=ch.job_id, b_owner=ctx.worker)
            groups.setdefault(tuple(sorted(values)), []).append(params)
        with self.session() as s:
            for keys, params_list in groups.items():
                if self.is_postgres:
                    lease_end = self._lease_end(now, lease) if check_lease and lease is not None else None
                    self._update_set(s, run_id, ctx.worker, keys, params_list, check_lease, lease_end)
                    continue
                # SQLite: plain DBAPI executemany (SQLAlchemy's per-row bind processing was the hot spot).
                columns = list(keys)
                extra: tuple[Any, ...] = ()
                if check_lease and lease is not None:
                    columns.append("lease_expires_at")
                    extra = (self._lease_end(now, lease),)
                where = ["run_id", "job_id", *(["lease_owner"] if check_lease else [])]
                sql = (f"UPDATE tasks SET {', '.join(f'{_q(c)} = ?' for c in columns)} "
                       f"WHERE {' AND '.join(f'{_q(c)} = ?' for c in where)}")
                rows_params = [(*(p[f"v_{k}"] for k in keys), *extra, run_id, p["b_job"],
                                *((ctx.worker,) if check_lease else ())) for p in params_list]
                result = _sqlite_executemany(s, sql, rows_params)
                if result.rowcount != len(params_list):
                    raise LeaseLost(f"{len(params_list) - result.rowcount} task(s) of run {run_id} are no longer ours")
            self._append(s, run_id, ctx, [ch.event for ch in changes if ch.event is not None], now)
            self._add_exchanges(s, run_id, ctx.worker, exchanges)

    @staticmethod
    def _update_set(s: Session, run_id: str, worker: str, keys: tuple[str, ...],
                    params_list: list[dict[str, Any]], check_lease: bool, lease_end: Any) -> None:
        """PostgreSQL: one set-based UPDATE … FROM unnest(arrays) per group (an executemany of a hundred
        single-row UPDATEs costs twenty times as long)."""
        table = cast(Table, Task.__table__)
        rows = {p["b_job"]: p for p in params_list}  # a task twice in one commit: the last change wins
        ids = bindparam("u_ids", list(rows), type_=ARRAY(String(64)))
        cols = [func.unnest(bindparam("u_job_id", list(rows), type_=ARRAY(String(64)))).label("job_id")]
        for k in keys:
            item = _ARRAY_ITEM.get(type(table.c[k].type).__name__, Text())
            column = [_raw(p[f"v_{k}"]) for p in rows.values()]
            cols.append(func.unnest(bindparam(f"u_{k}", column, type_=ARRAY(item))).label(k))
        v = select(*cols).subquery("v")
        # job_id = ANY(ids) narrows the scan on the (run_id, job_id) index when the planner has statistics.
        stmt = update(table).where(table.c.run_id == run_id, table.c.job_id == any_(ids),
                                   table.c.job_id == v.c.job_id)
        if check_lease:
            stmt = stmt.where(table.c.lease_owner == worker)
        values: dict[str, Any] = {k: v.c[k] for k in keys}
        if lease_end is not None:
            values["lease_expires_at"] = lease_end
        result = s.connection().execute(stmt.values(values))
        if result.rowcount != len(rows):
            raise LeaseLost(f"{len(rows) - result.rowcount} task(s) of run {run_id} are no longer ours")

    @staticmethod
    def _add_exchanges(s: Session, run_id: str | None, worker: str, exchanges: Sequence[Exchange]) -> None:
        if not exchanges:
            return
        s.execute(insert(ApiCall.__table__), [
            {"run_id": run_id, "at": ex.at, "worker": worker, "api": ex.api, "method": ex.method, "path": ex.path,
             "http_status": ex.http_status, "request_id": ex.request_id, "duration_ms": ex.duration_ms,
             "job_ids": ",".join(ex.job_ids), "error_code": ex.error_code, "attempt": ex.attempt}
            for ex in exchanges])

    @_retrying_db
    def record_exchanges(self, run_id: str | None, worker: str, exchanges: Sequence[Exchange]) -> None:
        if exchanges:
            with self.session() as s:
                self._add_exchanges(s, run_id, worker, exchanges)

    @_retrying_db
    def append_events(self, run_id: str, ctx: Context, events: Sequence[Event], now: datetime) -> None:
        with self.session() as s:
            self._append(s, run_id, ctx, events, now)

    @_retrying_db
    def set_run(self, run_id: str, **values: Any) -> None:
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(**values))

    # -- leases -----------------------------------------------------------------------------------------------
    #
    # A task belongs to the worker named in lease_owner. Ownership changes only under the row's lock (claims
    # take it with FOR UPDATE SKIP LOCKED, every write by the owner re-checks lease_owner in its WHERE), so it
    # is never ambiguous. Expiry is what lets a live worker take a dead one's tasks; on PostgreSQL it is
    # measured on the database's clock, so workers on hosts with skewed clocks agree on when a lease ran out.

    def _db_now(self, now: datetime) -> Any:
        return func.statement_timestamp() if self.is_postgres else now

    def _lease_end(self, now: datetime, lease: timedelta) -> Any:
        if self.is_postgres:
            return func.statement_timestamp() + literal(lease, Interval())
        return now + lease

    @_retrying_db
    def register_worker(self, worker: str, host: str, pid: int, now: datetime) -> None:
        """Record a worker process once (later calls only touch its heartbeat)."""
        with self.session() as s:
            known = s.get(Worker, worker)
            if known is None:
                s.add(Worker(id=worker, host=host, pid=pid, started_at=now, heartbeat_at=now,
                             finished_at=None))
            else:
                known.heartbeat_at, known.finished_at = now, None

    @_retrying_db
    def worker_finished(self, worker: str, now: datetime) -> None:
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker).values(finished_at=now, heartbeat_at=now))

    @_retrying_db
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
            if self.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            tasks = list(s.execute(stmt).scalars())
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

    @_retrying_db
    def held(self, run_id: str, worker: str, now: datetime, lease: timedelta) -> list[Task]:
        """Every active task this worker holds, its lease renewed: the way back after a LeaseLost."""
        with self.session() as s:
            stmt = (select(Task)
                    .where(Task.run_id == run_id, Task.state.in_(ACTIVE), Task.lease_owner == worker)
                    .order_by(Task.id))
            if self.is_postgres:
                stmt = stmt.with_for_update()
            tasks = list(s.execute(stmt).scalars())
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

    @_retrying_db
    def heartbeat(self, run_id: str, worker: str, now: datetime,
                  lease: timedelta) -> tuple[set[str], set[str]]:
        """Extend our leases; returns (the job ids renewed, the job ids of all active tasks we still hold)."""
        ours = (Task.run_id == run_id, Task.lease_owner == worker, Task.state.in_(ACTIVE))
        with self.session() as s:
            s.execute(update(Worker).where(Worker.id == worker).values(heartbeat_at=now))
            # Rows locked right now are skipped, not waited for: our own commit holding them extends their
            # lease itself, and a claimer holding them is taking them over: no lock-order deadlock with either.
            locked = select(Task.id).where(*ours)
            if self.is_postgres:
                locked = locked.with_for_update(skip_locked=True)
            renewed = s.execute(update(Task).where(Task.id.in_(locked.scalar_subquery()))
                                .values(lease_expires_at=self._lease_end(now, lease)).returning(Task.job_id)
                                .execution_options(synchronize_session=False))
            return set(renewed.scalars()), set(s.execute(select(Task.job_id).where(*ours)).scalars())

    @_retrying_db
    def not_ours(self, run_id: str, worker: str, job_ids: Sequence[str]) -> set[str]:
        """Which of these tasks another worker holds now."""
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(job_ids), 500):
                out.update(s.execute(select(Task.job_id).where(
                    Task.run_id == run_id, Task.job_id.in_(job_ids[i : i + 500]),
                    or_(Task.lease_owner.is_(None), Task.lease_owner != worker))).scalars())
        return out

    @_retrying_db
    def state_counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's tasks are in each local state (every worker's)."""
        with self.session() as s:
            rows = s.execute(select(Task.state, func.count()).where(Task.run_id == run_id)
                             .group_by(Task.state))
            return {state.value: int(n) for state, n in rows}

    @_retrying_db
    def claimable_count(self, run_id: str, now: datetime) -> int:
        """Active tasks nobody holds, or whose lease ran out."""
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(Task).where(
                Task.run_id == run_id, Task.state.in_(ACTIVE),
                or_(Task.lease_owner.is_(None), Task.lease_expires_at < self._db_now(now)))).scalar_one())

    @_retrying_db
    def release(self, run_id: str, worker: str) -> None:
        with self.session() as s:
            s.execute(update(Task).where(Task.run_id == run_id, Task.lease_owner == worker)
                      .values(lease_owner=None, lease_expires_at=None))

    @_retrying_db
    def finish_run(self, run_id: str, ctx: Context, event: Event, now: datetime, exit_code: int) -> bool:
        """Mark the run finished and record why, once: with several workers, the first to see it done wins."""
        with self.session() as s:
            run = s.execute(select(Run).where(Run.id == run_id).with_for_update()).scalar_one()
            if run.status == "finished":
                return False
            run.status, run.finished_at, run.exit_code = "finished", now, exit_code
            self._append(s, run_id, ctx, [event], now)
            return True

    # -- reading ----------------------------------------------------------------------------------------------

    @_retrying_db
    def run(self, run_id: str) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    @_retrying_db
    def find_run(self, prefix: str) -> Run | None:
        """A run by id or unique id prefix."""
        with self.session() as s:
            rows = list(s.execute(select(Run).where(Run.id.startswith(prefix)).limit(2)).scalars())
            return rows[0] if len(rows) == 1 else None

    @_retrying_db
    def runs(self, limit: int = 50) -> list[Run]:
        with self.session() as s:
            return list(s.execute(select(Run).order_by(Run.created_at.desc()).limit(limit)).scalars())

    @_retrying_db
    def unfinished_runs(self) -> list[Run]:
        with self.session() as s:
            return list(s.execute(select(Run).where(Run.status.in_(("running", "interrupted")))
                                  .order_by(Run.created_at.desc())).scalars())

    @_retrying_db
    def tasks(self, run_id: str) -> list[Task]:
        with self.session() as s:
            return list(s.execute(select(Task).where(Task.run_id == run_id).order_by(Task.id)).scalars())

    @_retrying_db
    def active_count(self, run_id: str) -> int:
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(Task)
                                 .where(Task.run_id == run_id, Task.state.in_(ACTIVE))).scalar_one())

    @_retrying_db
    def records(self, run_id: str) -> list[AuditRecord]:
        with self.session() as s:
            return list(s.execute(select(AuditRecord).where(AuditRecord.run_id == run_id)
                                  .order_by(AuditRecord.seq, AuditRecord.id)).scalars())

    @_retrying_db
    def api_calls(self, run_id: str) -> list[ApiCall]:
        with self.session() as s:
            return list(s.execute(select(ApiCall).where(ApiCall.run_id == run_id).order_by(ApiCall.id)).scalars())

    def verify(self, run_id: str) -> audit.Verification:
        """Recompute the run's chain from the stored records."""
        run = self.run(run_id)
        if run is None:
            raise StoreError(f"no run {run_id}")
        rows = [record_dict(r) for r in self.records(run_id)]
        return audit.verify_chain(run_id, rows, run.head_seq, run.head_hash)


def record_dict(r: AuditRecord) -> dict[str, Any]:
    """An audit record as a plain dict (chain fields and hash)."""
    return {name: getattr(r, name) for name in (*audit.CHAIN_FIELDS, "hash")}


_ARRAY_ITEM: dict[str, Any] = {"Integer": Integer(), "Boolean": Boolean(),
                               "UTCDateTime": DateTime(timezone=True)}


def _raw(value: Any) -> Any:
    """A column value as the array element PostgreSQL gets (enums by value, datetimes in UTC)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)
    return value


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database URL>"

