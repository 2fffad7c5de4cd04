"""The store's front door: `Store(url)` opens a SqliteStore or a PostgresStore; the value types writers hand it.

    Store(url, *, migrate=True, read_only=False)   the interface (orchestrator.store.base)
    ├── SqliteStore                                one process per run (file lock), executemany hot path
    └── PostgresStore                              shared by workers: leases, SKIP LOCKED, owner heartbeat
"""

from __future__ import annotations

from typing import Any

from orchestrator.store.base import Store, open_store
from orchestrator.store.records import Change, Context, Event, record_dict
from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.status import Holder, RunStatus


def _postgres() -> type[Store]:
    from orchestrator.store.postgres import PostgresStore

    return PostgresStore


# PostgresStore (and SQLAlchemy's PostgreSQL dialect, 30 ms of import) loads when first needed: by a
# postgresql:// URL (Store.__new__) or by its name here.
Store._loaders["postgresql"] = _postgres


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        return _postgres()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# PostgresStore is loaded on first use (module __getattr__ above).
__all__ = ["Change", "Context", "Event", "Holder", "PostgresStore", "RunStatus", "SqliteStore", "Store",  # noqa: F822
           "open_store", "record_dict"]
