"""Reading evidence read-only: a read-only file, folder or mount is opened without migrating or writing a byte,
and a schema older than the tool is named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import StoreError
from orchestrator.store.db import HEAD_REVISION
from orchestrator.store.repo import Event, Store
from tests.kit import db_at_revision
from tests.store.kit import CTX, NOW, REPO, record_run


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A finished run's database, copied into a folder, both made read-only (0444 file, 0555 folder)."""
    src = tmp_path / "live.db"
    store = Store(f"sqlite:///{src}")
    run_id = record_run(store, status="running", jobs=5)
    store.append_events(run_id, CTX, [Event(trigger="breakpoint", job_id=None, values={"gtid": "g:1-9"})], NOW)
    store.close()
    folder = tmp_path / "evidence"
    folder.mkdir()
    shutil.copy(src, folder / "run.db")
    assert not (folder / "run.db-wal").exists()  # closed cleanly: the log was merged
    (folder / "run.db").chmod(0o444)
    folder.chmod(0o555)
    yield folder / "run.db", run_id
    folder.chmod(0o755)


def _read(url: str, run_id: str) -> tuple[int, int, bool, str]:
    store = Store(url, read_only=True)
    try:
        run = store.run(run_id)
        assert run is not None
        return (len(store.tasks(run_id)), len(store.records(run_id)), store.verify(run_id).ok,
                store.run_status(run).status)
    finally:
        store.close()


def test_a_read_only_copy_is_read_and_nothing_is_written(evidence: tuple[Path, str]) -> None:
    db, run_id = evidence
    before = _snapshot(db.parent)
    # The recorded status is running; nobody holds it here: it shows interrupted, and nothing settles it.
    assert _read(f"sqlite:///{db}", run_id) == (5, 2, True, "interrupted")
    store = Store(f"sqlite:///{db}", read_only=True)
    assert store.settle_dead_runs(CTX) == []
    with pytest.raises(StoreError):
        store.set_run(run_id, status="finished")
    store.close()
    assert _snapshot(db.parent) == before  # same files, same bytes, same mtimes: not even a -wal or -shm


def test_a_live_database_is_read_with_its_write_ahead_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = Store(url)
    run_id = record_run(writer, status="running", jobs=3)
    owning = writer.own_run(run_id, "writer")
    owning.__enter__()
    writer.append_events(run_id, CTX, [Event(trigger="note")], NOW)
    assert (tmp_path / "live.db-wal").stat().st_size > 0
    db_bytes = (tmp_path / "live.db").read_bytes()
    assert _read(url, run_id) == (3, 2, True, "running")  # the newest writes, from the log; its owner is alive
    assert (tmp_path / "live.db").read_bytes() == db_bytes
    owning.__exit__(None, None, None)
    writer.close()


def test_an_older_schema_is_named_with_the_way_forward(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    db_at_revision(db, "0001")
    db.chmod(0o444)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:///{db}", read_only=True)
    assert f"at revision 0001, this tool needs {HEAD_REVISION}" in str(caught.value)
    assert "drs-teardown db upgrade` on a writable copy" in str(caught.value)
    assert caught.value.exit_code == 4
    assert _snapshot(tmp_path) == before


def test_a_missing_or_foreign_file_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database file"):
        Store(f"sqlite:///{tmp_path / 'absent.db'}", read_only=True)
    assert os.listdir(tmp_path) == []
    import sqlite3

    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(StoreError, match="not a drs-teardown database"):
        Store(f"sqlite:///{tmp_path / 'other.db'}", read_only=True)


MOUNTED = """
import json, sys
from orchestrator.errors import StoreError
from orchestrator.store.repo import Store
try:
    store = Store("sqlite:///" + sys.argv[1], read_only=True)
    runs = store.runs()
    print(json.dumps({"runs": len(runs), "ok": all(store.verify(r.id).ok for r in runs)}))
    store.close()
except StoreError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _on_a_read_only_mount(src: Path, mount: Path, name: str) -> dict[str, object]:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private read-only bind mount")
    mount.mkdir(exist_ok=True)
    script = (f"mount --bind -o ro '{src}' '{mount}' && touch '{mount}/probe' 2>/dev/null && echo WRITABLE; "
              f"exec '{sys.executable}' -c '{MOUNTED}' '{mount}/{name}'")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode != 0 and "mount" in r.stderr:
        pytest.skip(f"cannot make a read-only mount here: {r.stderr.strip()}")
    assert "WRITABLE" not in r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_database_on_a_read_only_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    store = Store(f"sqlite:///{src / 'clean.db'}")
    record_run(store, jobs=2)
    store.close()
    # A live database copied with its log and index: read with its newest writes.
    live = Store(f"sqlite:///{src / 'live.db'}")
    record_run(live, jobs=2)
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(f"{src / 'live.db'}{suffix}", f"{src / 'copy.db'}{suffix}")
    live.close()
    # ... and one whose log came without its index: refused, not shown without its newest writes.
    shutil.copy(src / "copy.db", src / "torn.db")
    shutil.copy(src / "copy.db-wal", src / "torn.db-wal")
    before = _snapshot(src)
    mount = tmp_path / "ro"
    assert _on_a_read_only_mount(src, mount, "clean.db") == {"runs": 1, "ok": True}
    assert _on_a_read_only_mount(src, mount, "copy.db") == {"runs": 1, "ok": True}
    torn = _on_a_read_only_mount(src, mount, "torn.db")
    assert "write-ahead log" in str(torn.get("error")) and "torn.db-wal" in str(torn.get("error"))
    assert _snapshot(src) == before


@pytest.mark.postgres
def test_postgresql_read_only_reads_and_refuses_writes(pg_url: str) -> None:
    writer = Store(pg_url)
    run_id = record_run(writer, jobs=2)
    writer.close()
    reader = Store(pg_url, read_only=True)
    assert len(reader.tasks(run_id)) == 2 and reader.verify(run_id).ok
    with pytest.raises(StoreError, match="read-only"):
        reader.set_run(run_id, status="finished")
    reader.close()
