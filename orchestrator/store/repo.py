"""The store's front door: `Store(url)` opens a SqliteStore or a PostgresStore; the value types writers hand it.

    Store(url, *, migrate=True, read_only=False)   the interface (orchestrator.store.base)
    ├── SqliteStore                                one process per run (file lock), executemany hot path
    └── PostgresStore                              shared by workers: leases, SKIP LOCKED, owner heartbeat
"""

from __future__ import annotations

from orchestrator.store.base import Store, open_store
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.records import Change, Context, Event, record_dict
from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.status import Holder, RunStatus

__all__ = ["Change", "Context", "Event", "Holder", "PostgresStore", "RunStatus", "SqliteStore", "Store",
           "open_store", "record_dict"]
