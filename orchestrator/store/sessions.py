"""What every part of the store shares: the engine, sessions, retries, and the hooks each dialect implements."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Engine, Select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import StoreError, StoreLost
from orchestrator.store.records import Context, Event
from orchestrator.store.schema import Run
from orchestrator.store.urls import display, scrub

F = TypeVar("F", bound=Callable[..., Any])
# The local states of a run that is not over: it can be resumed (or is being worked).
UNFINISHED = ("planning", "running", "interrupted")
# ... and of one that claims to be worked right now.
WORKING = ("planning", "running")


def retrying(fn: F) -> F:
    """Retry briefly on a busy/locked SQLite or a dropped PostgreSQL connection, then raise StoreError.

    The message never holds the URL's password; a failure on a database file that vanished is StoreLost.
    """

    @functools.wraps(fn)
    def wrapper(self: StoreCore, *args: Any, **kwargs: Any) -> Any:
        delay = 0.05
        for attempt in range(6):
            try:
                return fn(self, *args, **kwargs)
            except (OperationalError, DBAPIError) as exc:
                # A deadlock or serialisation failure rolled the whole transaction back: safe to run it again.
                if not self._transient(exc) or attempt == 5:
                    self.check_alive()
                    raise StoreError(f"database error on {self.url}: {self.scrub(str(exc.orig or exc))}") from exc
                time.sleep(delay)
                delay *= 2
            except SQLAlchemyError as exc:
                self.check_alive()
                raise StoreError(f"database error on {self.url}: {self.scrub(str(exc))}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper  # type: ignore[return-value]


class StoreCore:
    """The engine and its sessions; the dialect hooks raise NotImplementedError here."""

    dialect: ClassVar[str] = ""
    # Several processes (on several hosts) may work one run: task leases, SKIP LOCKED, the database's clock.
    shared: ClassVar[bool] = False
    engine: Engine
    read_only: bool
    _url: URL
    _sessions: sessionmaker[Session]

    @property
    def url(self) -> str:
        """The database URL as shown to users: never its password."""
        return display(self._url)

    @property
    def is_postgres(self) -> bool:
        """Kept for callers written before `shared`; true exactly when the store is shared."""
        return self.shared

    def scrub(self, text: str) -> str:
        return scrub(text, self._url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on leaving, rolled back on an exception."""
        with self._sessions() as session, session.begin():
            yield session

    def check_alive(self) -> None:
        """StoreLost if the database this store writes is gone (see the implementations)."""

    def _append(self, s: Session, run_id: str, ctx: Context, events: Sequence[Event], now: datetime) -> None:
        """Chain `events` onto the run's trail inside the session's transaction (TrailWrites)."""
        raise NotImplementedError

    def _stamp_owner(self, run: Run) -> None:
        """Ownership: a run created while this store owns it carries its owner from its first row."""

    # -- dialect hooks -----------------------------------------------------------------------------------------

    def _create_engine(self, url: URL) -> Engine:
        raise NotImplementedError

    def _transient(self, exc: DBAPIError) -> bool:
        """Whether running the transaction again may work."""
        return bool(exc.connection_invalidated)

    def _insert(self, s: Session, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many rows of one shape (the same keys) at once."""
        raise NotImplementedError

    def _update_tasks(self, s: Session, run_id: str, worker: str, keys: tuple[str, ...],
                      rows: list[dict[str, Any]], check_lease: bool, lease_end: Any) -> None:
        """Apply `rows` (each a job_id and values for `keys`) to the run's tasks; LeaseLost if check_lease and
        one is not held by `worker` (nothing is left changed: the caller's transaction rolls back)."""
        raise NotImplementedError

    def _db_now(self, now: datetime) -> Any:
        """The instant lease expiry is judged at."""
        return now

    def _lease_end(self, now: datetime, lease: timedelta) -> Any:
        return now + lease

    def _locking(self, stmt: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        """`stmt` locking the rows it reads, where the database has row locks."""
        return stmt

    def _owner_alive(self, run: Run) -> bool:
        """Whether the process recorded as the run's owner is alive (see status.py)."""
        raise NotImplementedError

    def _lost(self, path: str, why: str) -> StoreLost:
        return StoreLost(f"the database file {path} {why}: this run's writes since then are lost; "
                         "nothing more is sent")
