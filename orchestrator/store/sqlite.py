"""The SQLite store: one process per run (an OS-released file lock), DBAPI executemany on the hot path, and a
database file watched for vanishing."""

from __future__ import annotations

import contextlib
import enum
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orchestrator.errors import LeaseLost, RunBusy, StoreError
from orchestrator.store.base import Store
from orchestrator.store.connections import sqlite_engine
from orchestrator.store.runlock import RunLock, held_by
from orchestrator.store.schema import Run
from orchestrator.store.status import Holder
from orchestrator.store.urls import sqlite_path

SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format
_PLAIN = (str, int, float, bool, type(None))
_PLAIN_SET = frozenset(_PLAIN)


def sqlite_param(value: Any) -> Any:
    """What SQLAlchemy would bind on SQLite for our column types: UTC datetimes as its text format, enums by
    value, JSON values as JSON text; the rest as is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).strftime(SQLITE_DATETIME)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _executemany(s: Session, sql: str, rows: list[tuple[Any, ...]]) -> Any:
    """One DBAPI executemany. Converted column by column: most columns hold only plain values (checked at C
    speed), and a commit stamps one `now` on thousands of rows (each distinct datetime formatted once)."""
    if not rows:
        return None
    columns = list(zip(*rows, strict=True))
    formatted: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        if type(value) in _PLAIN:
            return value
        try:
            return formatted[value]
        except (KeyError, TypeError):
            out = sqlite_param(value)
            with contextlib.suppress(TypeError):
                formatted[value] = out
            return out

    for i, column in enumerate(columns):
        if not _PLAIN_SET.issuperset(map(type, column)):
            columns[i] = tuple(map(convert, column))
    return s.connection().exec_driver_sql(sql, list(zip(*columns, strict=True)))


class SqliteStore(Store, dialect="sqlite"):
    """A SQLite file: one process works a run; writers serialise on the file (BEGIN IMMEDIATE)."""

    shared = False

    @property
    def path(self) -> str | None:
        """The database file (None in memory)."""
        return sqlite_path(self._url)

    def _create_engine(self, url: URL) -> Engine:
        path = self.path
        self._created = path is not None and not self.read_only and not os.path.lexists(path)
        return sqlite_engine(url, read_only=self.read_only)

    def _opened(self) -> None:
        self._watch: tuple[int, int, int] | None = None
        if self.path is not None:
            fd = os.open(self.path, os.O_RDONLY)
            st = os.fstat(fd)
            self._watch = (fd, st.st_dev, st.st_ino)

    def _open_failed(self) -> None:
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        if self.path is not None and getattr(self, "_created", False):
            # Leave nothing behind that this open made (an empty file would look like an empty store).
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)

    def _closed(self) -> None:
        watch = getattr(self, "_watch", None)
        if watch is not None:
            os.close(watch[0])
            self._watch = None

    def check_alive(self) -> None:
        """StoreLost if the file at the database's path is not the one this store opened: deleted, moved away
        or replaced (two stat calls: cheap enough for every few seconds)."""
        watch = getattr(self, "_watch", None)
        if watch is None or self.path is None:
            return
        fd, dev, ino = watch
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._lost(self.path, "was deleted or moved away") from None
        except OSError as exc:
            raise self._lost(self.path, f"cannot be read ({exc.strerror})") from exc
        if (st.st_dev, st.st_ino) != (dev, ino):
            raise self._lost(self.path, "was replaced by another file")
        if os.fstat(fd).st_nlink == 0:
            raise self._lost(self.path, "was deleted")

    def _transient(self, exc: DBAPIError) -> bool:
        text = str(exc)
        return bool(exc.connection_invalidated) or "locked" in text or "busy" in text

    def _insert(self, s: Session, table: str, rows: Sequence[dict[str, Any]]) -> None:
        # Plain DBAPI executemany: SQLAlchemy's per-row bind processing was the hot spot.
        if not rows:
            return
        columns = list(rows[0])
        sql = (f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in columns)}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        pick = itemgetter(*columns)
        _executemany(s, sql, [pick(r) for r in rows] if len(columns) > 1 else [(r[columns[0]],) for r in rows])

    def _update_tasks(self, s: Session, run_id: str, worker: str, keys: tuple[str, ...],
                      rows: list[dict[str, Any]], check_lease: bool, lease_end: Any) -> None:
        columns = list(keys)
        extra: tuple[Any, ...] = ()
        if lease_end is not None:
            columns.append("lease_expires_at")
            extra = (lease_end,)
        where = ["run_id", "job_id", *(["lease_owner"] if check_lease else [])]
        sql = (f"UPDATE tasks SET {', '.join(f'{_q(c)} = ?' for c in columns)} "
               f"WHERE {' AND '.join(f'{_q(c)} = ?' for c in where)}")
        tail = (run_id,)
        pick = itemgetter(*keys, "job_id")
        owner = (worker,) if check_lease else ()
        params = []
        for r in rows:
            *values, job = pick(r)
            params.append((*values, *extra, *tail, job, *owner))
        result = _executemany(s, sql, params)
        if result.rowcount != len(rows):
            raise LeaseLost(f"{len(rows) - result.rowcount} task(s) of run {run_id} are no longer ours")

    # -- one owner per run: the file lock ----------------------------------------------------------------------

    def _lock_base(self) -> str:
        # The file itself, whatever path names it (relative, through a symlink): one lock per database.
        if self.path is None:
            raise StoreError("an in-memory database has no run locks")
        return os.path.realpath(self.path)

    def _take_run(self, run_id: str, me: Holder) -> Callable[[], None]:
        if self.path is None:
            if run_id in self._owned:
                raise RunBusy(f"run {run_id} is already worked by this process")
            return lambda: None
        lock = RunLock.take(self._lock_base(), run_id, me)
        try:
            self._record_owner(run_id, me)
        except BaseException:
            lock.release()
            raise
        return lock.release

    def _take_exclusive(self, name: str, me: Holder) -> Callable[[], None]:
        if self.path is None:
            return lambda: None  # an in-memory database: this process is the only one
        return RunLock.take(self._lock_base(), name, me).release

    def _owner_alive(self, run: Run) -> bool:
        if self.path is None:
            return run.id in self._owned
        return held_by(self._lock_base(), run.id) is not None

    def _settle(self, run: Run, interrupt: Callable[[Any], bool]) -> bool:
        # Holding the run's lock, nobody can start working it while its status is changed.
        try:
            lock = RunLock.take(self._lock_base(), run.id, Holder.here("settle", "settle"))
        except RunBusy:
            return False
        try:
            with self.session() as s:
                return interrupt(s)
        finally:
            lock.release()

    def lock_folder(self) -> Path | None:
        """Where the run locks live (`<db>-runs/`), for a caller that cleans up or reports."""
        return Path(f"{self._lock_base()}-runs") if self.path else None
