"""Alembic environment. The database comes from the caller: a connection (`config.attributes["connection"]`),
an engine (`config.attributes["engine"]`), or, for the alembic command line only, `sqlalchemy.url`."""

from __future__ import annotations

from alembic import context
import sqlalchemy as sa
from sqlalchemy import engine_from_config, pool

from orchestrator.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _compare_type(ctx: object, inspected: object, metadata: object, inspected_type: sa.types.TypeEngine,
                  metadata_type: sa.types.TypeEngine) -> bool | None:
    """SQLite does not enforce a VARCHAR's length, so a length-only difference is none there (migrations widen
    such columns on PostgreSQL only: on SQLite the change would rebuild a parent table under its foreign keys)."""
    if (ctx.dialect.name == "sqlite"  # type: ignore[attr-defined]
            and all(type(t) in (sa.String, sa.VARCHAR) for t in (inspected_type, metadata_type))):
        return False
    return None  # Alembic's own comparison


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=_compare_type,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:
        engine = engine_from_config(config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.",
                                    poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
