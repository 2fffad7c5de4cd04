"""The Store: one interface, a SQLite and a PostgreSQL implementation picked when it is opened.

`Store(url)` returns a SqliteStore or a PostgresStore (the implementations register themselves here; import
them through orchestrator.store.repo). The dialects differ only in the hooks of StoreCore and Ownership: how
rows are inserted and updated in bulk, how rows are locked, whose clock judges a lease, how a run is held and
how its owner is known to be alive, how the database can be lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy.orm import sessionmaker

from orchestrator.errors import StoreError, TeardownError
from orchestrator.store.db import check_revision, upgrade
from orchestrator.store.leases import Leases
from orchestrator.store.owners import Ownership
from orchestrator.store.reads import Reads
from orchestrator.store.urls import parse_url
from orchestrator.store.writes import TrailWrites


class Store(TrailWrites, Leases, Reads, Ownership):
    """Runs, tasks and the trail in one database (a SQLite file or PostgreSQL).

    read_only: open without migrating or writing anything (evidence on a read-only mount, a copy under
    review); StoreError if the schema is not the one this tool writes. migrate=False: open as found.
    """

    _implementations: ClassVar[dict[str, type[Store]]] = {}
    _mixed: ClassVar[dict[tuple[type, type], type]] = {}
    _loaders: ClassVar[dict[str, Callable[[], object]]] = {}  # dialect -> what imports its implementation

    def __init_subclass__(cls, *, dialect: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if dialect:
            cls.dialect = dialect
            Store._implementations[dialect] = cls

    def __new__(cls, url: str, *args: Any, **kw: Any) -> Store:
        if cls.dialect:
            return super().__new__(cls)
        backend = parse_url(url).get_backend_name()
        if backend not in Store._implementations and backend in Store._loaders:
            Store._loaders[backend]()  # an implementation loaded only when a URL asks for it
        impl = Store._implementations.get(backend)
        if impl is None:
            raise StoreError(f"no store for {backend}: import orchestrator.store.repo")
        if cls is not Store:
            # A subclass of the interface itself (a test's store with one method changed): over the dialect.
            key = (cls, impl)
            if key not in Store._mixed:
                Store._mixed[key] = type(cls.__name__, (cls, impl), {"__module__": cls.__module__})
            impl = Store._mixed[key]  # type: ignore[assignment]
        return super().__new__(impl)

    def __init__(self, url: str, *, migrate: bool = True, read_only: bool = False) -> None:
        self._url = parse_url(url)
        self.read_only = read_only
        self._owned = {}
        try:
            self.engine = self._create_engine(self._url)
            if read_only:
                check_revision(self.engine)
            elif migrate:
                upgrade(self.engine)
            self._opened()
        except Exception as exc:
            self._open_failed()
            if isinstance(exc, TeardownError):
                exc.args = (self.scrub(str(exc)),)
                exc.message = self.scrub(exc.message)
                raise
            raise StoreError(f"cannot open or migrate the database {self.url}: {self.scrub(str(exc))}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()
        self._closed()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dialect hooks for opening and closing -----------------------------------------------------------------

    def _opened(self) -> None:
        """The database is open and at the right revision."""

    def _open_failed(self) -> None:
        """Opening failed: undo what opening made (an empty file, say)."""

    def _closed(self) -> None:
        """After the engine is disposed."""


def open_store(url: str, *, read_only: bool = False, migrate: bool = True) -> Store:
    """The store at `url` (the same as Store(url, ...))."""
    return Store(url, read_only=read_only, migrate=migrate)
