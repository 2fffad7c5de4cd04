"""Engines, SQLite honesty (foreign keys, WAL, BEGIN IMMEDIATE, 0600 files) and migrations on start."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///./drs-teardown.db"
# The newest migration; a test asserts it equals Alembic's head. Knowing it lets every command skip importing
# Alembic (half a second) when the database is already current.
HEAD_REVISION = "0001"



def normalise_url(url: str) -> str:
    """Accept postgresql:// and postgres:// as psycopg 3 URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _prepare_sqlite_file(database: str | None) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not path.parent.exists():
        raise StoreError(f"database folder {path.parent} does not exist")
    if not path.exists():
        # Created owner-only before SQLite touches it; the -wal/-shm files inherit its mode.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and BEGIN IMMEDIATE transactions."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"--db: not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed.database)
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
    if parsed.get_backend_name() == "postgresql":
        # Bounded waits on a database that stops answering: connecting, and (via TCP keepalives) a dead peer.
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                               connect_args={"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                             "keepalives_interval": 10, "keepalives_count": 3})

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_conn: Any, _record: Any) -> None:
            # psycopg prepares a statement run five times, and PostgreSQL then switches to a generic plan
            # that ignores the run id and the row counts: on a busy tasks table it scans instead of probing
            # the index (3x to 20x slower updates). Plan every statement for its actual parameters.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_conn.commit()

        return engine
    raise StoreError(f"--db: unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql)")


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("orchestrator.migrations")))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (a no-op, without importing Alembic, when already current)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: Engine) -> str | None:
    """The applied revision, read directly from alembic_version."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str | None:
    """Alembic's own idea of the newest revision."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
