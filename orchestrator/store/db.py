"""Migrations: Alembic on start (skipped without importing Alembic when current), and the schema revision check
for read-only stores. Alembic gets the connection itself (`config.attributes`), never a URL string: its
ConfigParser would read a `%` in a path or password as interpolation."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from orchestrator.errors import StoreError
from orchestrator.store.connections import make_engine
from orchestrator.store.urls import display

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["DEFAULT_URL", "HEAD_REVISION", "alembic_config", "check_revision", "current_revision",
           "head_revision", "make_engine", "upgrade"]

DEFAULT_URL = "sqlite:///./drs-teardown.db"
# The newest migration; a test asserts it equals Alembic's head. Knowing it lets every command skip importing
# Alembic (half a second) when the database is already current.
HEAD_REVISION = "0004"
# Every revision this tool knows, oldest first: a database at an unknown one was written by a newer tool.
REVISIONS = ("0001", "0002", "0003", "0004")
# The PostgreSQL advisory lock key (64-bit, this tool's own) held while migrating.
MIGRATION_LOCK_KEY = 0x6472_7374_0000_0001


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration; with `engine`, env.py connects through it (unless handed a connection)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("orchestrator.migrations")))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (a no-op, without importing Alembic, when already current)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Processes starting at once on a fresh database (a run and its workers) migrate one at a time: the
            # others wait here for the first one's commit, then find the schema current. (SQLite's BEGIN
            # IMMEDIATE serialises them already.)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            if _revision(conn) == HEAD_REVISION:
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: Engine) -> str | None:
    """The applied revision, read directly from alembic_version."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_revision(engine: Engine) -> None:
    """For a store that must not migrate: StoreError unless the schema is the one this tool writes."""
    where = display(engine.url)
    try:
        revision = current_revision(engine)
    except Exception as exc:
        raise StoreError(f"cannot read the schema revision of {where}: {exc}") from exc
    if revision == HEAD_REVISION:
        return
    if revision is None:
        raise StoreError(f"{where} is not a drs-teardown database (no schema revision recorded)")
    if revision in REVISIONS:
        raise StoreError(f"the database {where} is at revision {revision}, this tool needs {HEAD_REVISION}; "
                         "run `drs-teardown db upgrade` on a writable copy")
    raise StoreError(f"the database {where} is at revision {revision}, newer than this tool knows "
                     f"({HEAD_REVISION}); use the drs-teardown that wrote it")


def head_revision() -> str | None:
    """Alembic's own idea of the newest revision."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
