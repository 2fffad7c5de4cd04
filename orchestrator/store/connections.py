"""SQLAlchemy engines: SQLite honesty (foreign keys, WAL, BEGIN IMMEDIATE, 0600 files), read-only SQLite opened
without writing a byte, PostgreSQL with bounded waits. Every engine gets a parsed `URL`, never a string."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

from orchestrator.errors import StoreError
from orchestrator.store.urls import parse_url, sqlite_path


def make_engine(url: URL | str, *, read_only: bool = False) -> Engine:
    """An engine for `url` (SQLite or PostgreSQL); see sqlite_engine and postgres_engine."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        return sqlite_engine(parsed, read_only=read_only)
    return postgres_engine(parsed, read_only=read_only)


# -- SQLite ----------------------------------------------------------------------------------------------------


def prepare_sqlite_file(path: str) -> bool:
    """Create the database file owner-only before SQLite touches it (-wal/-shm inherit its mode).

    Returns whether it was created here, so a failed open can remove what it made.
    """
    file = Path(path)
    if not file.parent.exists():
        raise StoreError(f"database folder {file.parent} does not exist")
    try:
        fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def sqlite_engine(url: URL, *, read_only: bool = False) -> Engine:
    path = sqlite_path(url)
    if read_only:
        if path is None:
            raise StoreError("an in-memory database cannot be opened read-only")
        return _sqlite_read_only(url, path)
    if path is not None:
        prepare_sqlite_file(path)
    engine = create_engine(url, connect_args={"timeout": 2})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The documented pysqlite fix: let SQLAlchemy emit BEGIN itself, so savepoints work.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        # Wait briefly on a busy file; the store retries a few times, then exits 4 (about 15 s in all).
        cur.execute("PRAGMA busy_timeout=2000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock upgrading a read lock to a write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def read_only_mode(path: str) -> str:
    """How to open `path` without writing: 'immutable=1' or 'mode=ro' (probed), or StoreError.

    A database with no -wal/-shm beside it was closed cleanly: `immutable=1` reads it and creates nothing. One
    with a write-ahead log (live, or copied unclean) needs `mode=ro`, which reads the log; on a read-only
    mount that works only if SQLite can use the -shm, and an unreadable non-empty log is refused rather than
    silently ignored (immutable would show the database without its newest writes).
    """
    file = Path(path)
    if not file.is_file():
        raise StoreError(f"no database file at {path}")
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if not wal.exists() and not shm.exists():
        return "immutable=1"
    problem = _probe(path, "mode=ro")
    if problem is None:
        return "mode=ro"
    if wal_size == 0:
        return "immutable=1"
    raise StoreError(f"cannot read {path} read-only: its write-ahead log {wal} holds writes not yet merged and "
                     f"SQLite cannot open it here ({problem}); copy the database with its -wal and -shm files "
                     "to a writable folder and read the copy")


def _uri(path: str, mode: str) -> str:
    return f"file:{quote(os.path.abspath(path), safe='/')}?{mode}"


def _probe(path: str, mode: str) -> str | None:
    try:
        conn = sqlite3.connect(_uri(path, mode), uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None


def _sqlite_read_only(url: URL, path: str) -> Engine:
    uri = _uri(path, read_only_mode(path))

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=2, check_same_thread=False)
        conn.isolation_level = None
        conn.execute("PRAGMA query_only=ON")
        return conn

    return create_engine(url, creator=connect)


# -- PostgreSQL ------------------------------------------------------------------------------------------------


def postgres_engine(url: URL, *, read_only: bool = False) -> Engine:
    options = "-c plan_cache_mode=force_custom_plan"
    if read_only:
        options += " -c default_transaction_read_only=on"
    # Bounded waits on a database that stops answering: connecting, and (via TCP keepalives) a dead peer.
    # psycopg prepares a statement run five times, and PostgreSQL then switches to a generic plan that ignores
    # the run id and the row counts: on a busy tasks table it scans instead of probing the index (3x to 20x
    # slower updates). force_custom_plan plans every statement for its actual parameters.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         connect_args={"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                       "keepalives_interval": 10, "keepalives_count": 3, "options": options})
