"""Reading commands work on read-only evidence (issue 13): status, audit, verify and report open the database
read-only — nothing migrated, nothing written, no file created beside it — and a dead run shows interrupted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from orchestrator.store.repo import Store
from tests.kit import add, cli, simulator, sqlite_url, teardown


def _snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime) for p in folder.iterdir()}


def test_status_audit_verify_and_report_on_a_read_only_copy(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        add(sim, 2, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, sqlite_url(tmp_path, "live.db"), poll_interval=0.05)
    td.store.close()
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    shutil.copy(tmp_path / "live.db", evidence / "copy.db")
    (evidence / "copy.db").chmod(0o444)
    evidence.chmod(0o555)
    before = _snapshot(evidence)
    db = ["--db", f"sqlite:///{evidence / 'copy.db'}"]
    try:
        for args in (["status"], ["status", td.run_id], ["audit", td.run_id, "--format", "csv"],
                     ["verify", td.run_id], ["report", td.run_id, "--html", str(tmp_path / "r.html")]):
            r = cli([*db, *args])
            assert r.exit_code == 0, (args, r.output)
        assert "ok" in cli([*db, "verify"]).stdout
        assert _snapshot(evidence) == before  # not a byte, not an mtime, no -wal or -shm
    finally:
        evidence.chmod(0o755)


def test_a_dead_run_shows_interrupted_naming_its_holder(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        add(sim, 1, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, db, poll_interval=0.05)
    store = Store(db)
    store.set_run(td.run_id, status="running", finished_at=None)  # as a killed process leaves it
    r = cli(["--db", db, "status", "--output", "json"])
    (run,) = json.loads(r.stdout)["runs"]
    assert run["status"] == "interrupted"
