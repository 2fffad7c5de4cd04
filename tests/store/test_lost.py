"""A store that notices being lost: the database file deleted, moved away or replaced under a running run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import StoreLost
from orchestrator.store.repo import Event, Store
from tests.store.kit import CTX, NOW, record_run


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "run.db"


def _open(db: Path) -> tuple[Store, str]:
    store = Store(f"sqlite:///{db}")
    return store, record_run(store, status="running", jobs=3)


def test_an_intact_database_is_alive(db: Path) -> None:
    store, run_id = _open(db)
    for _ in range(3):
        store.check_alive()
    assert store.finish_run(run_id, CTX, Event(trigger="run_finished"), NOW, 0)
    store.close()


def test_an_unlinked_database_is_noticed_and_the_run_is_never_finished(db: Path) -> None:
    store, run_id = _open(db)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            os.unlink(f"{db}{suffix}")
    # SQLite goes on writing into the unlinked file as if nothing happened: only the check tells.
    store.append_events(run_id, CTX, [Event(trigger="note")], NOW)
    with pytest.raises(StoreLost) as caught:
        store.check_alive()
    assert str(db) in str(caught.value) and "deleted" in str(caught.value)
    assert caught.value.exit_code == 4
    with pytest.raises(StoreLost, match=str(db)):
        store.finish_run(run_id, CTX, Event(trigger="run_finished"), NOW, 0)
    store.close()


def test_a_replaced_database_is_noticed(db: Path, tmp_path: Path) -> None:
    store, _ = _open(db)
    other = tmp_path / "other.db"
    shutil.copy(db, other)
    os.replace(other, db)
    with pytest.raises(StoreLost, match="replaced by another file"):
        store.check_alive()
    store.close()


def test_a_database_moved_away_is_noticed(db: Path, tmp_path: Path) -> None:
    store, _ = _open(db)
    os.rename(db, tmp_path / "elsewhere.db")
    with pytest.raises(StoreLost, match="deleted or moved away"):
        store.check_alive()
    store.close()


def test_nothing_to_verify_is_not_ok(db: Path) -> None:
    store = Store(f"sqlite:///{db}")
    assert store.verify_all() == [] and store.run_count() == 0
    run_id = record_run(store)
    assert [v.run_id for v in store.verify_all()] == [run_id] and store.verify_all()[0].ok
    store.close()
