"""SQLAlchemy 2 models: runs, tasks, the audit trail (hash-chained, append-only), API calls, workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestrator.lifecycle import TaskState

# Room for a local state name of up to 32 characters (stored as text, never a native enum).
STATE_LENGTH = 32

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no tz support) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # planning (recorded, tasks being added) | running | finished | interrupted; see status.py for the status a
    # user sees (a running run whose owner died is shown interrupted).
    status: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(255))
    selection: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]
    actor: Mapped[dict[str, Any]]
    ticket: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    consent: Mapped[str] = mapped_column(String(64))
    plan_hash: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None]
    # The chain head: appends lock this row, so concurrent writers serialise on it.
    head_seq: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    # Every target of a multi-target run ([{"label", "endpoint", "project_id", ...}]); None: the one above.
    targets: Mapped[list[Any] | None] = mapped_column(JSON)
    # The process working the run now (or last): who, where, since when, its last sign of life.
    owner: Mapped[str | None] = mapped_column(String(128))
    owner_pid: Mapped[int | None]
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_since: Mapped[datetime | None]
    owner_heartbeat: Mapped[datetime | None]
    owner_command: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, status={self.status!r}, project_id={self.project_id!r})"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("run_id", "job_id"),
        Index("ix_tasks_run_state", "run_id", "state"),
        Index("ix_tasks_job_id", "job_id"),  # which runs hold a task: the overlap check
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=False)
    job_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    db_use_type: Mapped[str | None] = mapped_column(String(32))
    engine_type: Mapped[str | None] = mapped_column(String(64))
    parent_job_id: Mapped[str | None] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(128))
    planned_action: Mapped[str] = mapped_column(String(32))
    plan_status: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[TaskState] = mapped_column(
        Enum(TaskState, native_enum=False, length=STATE_LENGTH, values_callable=lambda e: [m.value for m in e],
             validate_strings=True)
    )
    last_status: Mapped[str | None] = mapped_column(String(64))
    last_observed_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    stop_attempts: Mapped[int] = mapped_column(Integer, default=0)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    busy_retries: Mapped[int] = mapped_column(Integer, default=0)
    resends: Mapped[int] = mapped_column(Integer, default=0)
    phase_started_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None]
    unchanged_polls: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # The target (label) of a multi-target run, and its project when it differs from the run's.
    target: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[str | None] = mapped_column(String(64))
    # None for a top-level task; 'reedit' or 'dual_active' for a child selected with its parent.
    child_kind: Mapped[str | None] = mapped_column(String(16))
    # The breakpoint read before the delete (--record-breakpoint).
    gtid: Mapped[str | None] = mapped_column(Text)
    incre_start_position: Mapped[str | None] = mapped_column(Text)
    # The BSS resource ids of a yearly/monthly task's order (--unsubscribe-prepaid).
    bss_resource_ids: Mapped[list[Any] | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"Task(run_id={self.run_id!r}, job_id={self.job_id!r}, state={self.state.value!r})"


class AuditRecord(Base):
    """One transition (or run-level event). Append-only: triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_records"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int]
    at: Mapped[datetime]
    job_id: Mapped[str | None] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    to_state: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    trigger: Mapped[str] = mapped_column(String(32))
    remote_status: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    request_ids: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    worker: Mapped[str] = mapped_column(String(128))
    ticket: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Structured values of the event (a breakpoint, BSS resource ids) as canonical JSON text; chained when set.
    values: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"AuditRecord(run_id={self.run_id!r}, seq={self.seq}, {self.from_state}->{self.to_state})"


class ApiCall(Base):
    """One HTTP exchange: never a header value, token or body. Append-only."""

    __tablename__ = "api_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    at: Mapped[datetime]
    worker: Mapped[str] = mapped_column(String(128))
    api: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    http_status: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    duration_ms: Mapped[float] = mapped_column(Float)
    job_ids: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int]

    def __repr__(self) -> str:
        return f"ApiCall({self.method} {self.path} -> {self.http_status})"


class Worker(Base):
    """A process working on runs; its heartbeat keeps its task leases alive.

    `run_id` is the run it serves now (None: between runs, looking for work); the heartbeat, on the database's
    clock on PostgreSQL, says it is alive. Together they tell how many workers share a run (engine/leases.py).
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    run_id: Mapped[str | None] = mapped_column(String(32))

    def __repr__(self) -> str:
        return f"Worker(id={self.id!r})"
