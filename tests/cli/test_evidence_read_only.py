"""Reading commands work on read-only evidence (issue 13): status, audit, verify and report open the database
read-only — nothing migrated, nothing written, no file created beside it — and a dead run shows interrupted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.store.db import HEAD_REVISION
from orchestrator.store.repo import Store
from tests.kit import add, cli, db_at_revision, simulator, sqlite_url, teardown

REPO = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.stat().st_mtime)
            for p in folder.iterdir()}


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
    assert "recorded running, but process " in run["detail"] and "is gone: resumable" in run["detail"]


# Inside a private mount namespace: the evidence folder bind-mounted read-only, each reading command run on it.
ON_A_READ_ONLY_MOUNT = """
mount --bind -o ro "$SRC" "$MNT" || exit 97
touch "$MNT/probe" 2>/dev/null && exit 98
n=0
while IFS= read -r line; do
    n=$((n+1))
    eval "\\"$PY\\" -m orchestrator $line" > "$T/out-$n" 2> "$T/err-$n"; echo $? > "$T/rc-$n"
done < "$T/commands"
"""


def test_status_audit_verify_and_report_on_a_read_only_mount(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private read-only bind mount")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    with simulator(profile="fast") as (sim, url):
        add(sim, 2, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, sqlite_url(src, "run.db"), poll_interval=0.05)
    td.store.close()
    db_at_revision(src / "old.db", "0001")  # written by an older version of the tool
    run_db, old_db = f"--db 'sqlite:///{mnt / 'run.db'}'", f"--db 'sqlite:///{mnt / 'old.db'}'"
    commands = [f"{run_db} status", f"{run_db} status {td.run_id} --output json", f"{run_db} audit {td.run_id}",
                f"{run_db} audit {td.run_id} --format csv", f"{run_db} verify --output json",
                f"{run_db} report {td.run_id} --html '{tmp_path / 'r.html'}'", f"{old_db} status",
                f"{old_db} verify --output json"]
    (tmp_path / "commands").write_text("\n".join(commands) + "\n")
    before = _snapshot(src)
    env = {**os.environ, "PY": sys.executable, "SRC": str(src), "MNT": str(mnt), "T": str(tmp_path),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", ON_A_READ_ONLY_MOUNT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode == 97:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr

    def result(n: int) -> tuple[int, str, str]:
        return (int((tmp_path / f"rc-{n}").read_text()), (tmp_path / f"out-{n}").read_text(),
                (tmp_path / f"err-{n}").read_text())

    for n in range(1, 7):
        assert result(n)[0] == 0, (commands[n - 1], result(n))
    assert td.run_id in result(1)[1] and "finished" in result(1)[1]
    assert json.loads(result(2)[1])["counts"] == {"deleted": 2}
    assert "run_finished" in result(3)[1] and "run_finished" in result(4)[1]
    assert json.loads(result(5)[1])["ok"] is True
    assert "<html" in (tmp_path / "r.html").read_text()
    # An older schema is named, with the way forward, and nothing is migrated.
    code, out, err = result(7)
    assert code == 4 and f"at revision 0001, this tool needs {HEAD_REVISION}" in err and "db upgrade" in err
    code, out, _ = result(8)
    assert code == 4 and f"at revision 0001, this tool needs {HEAD_REVISION}" in json.loads(out)["error"]
    assert _snapshot(src) == before  # not a byte written, no -wal or -shm created


def test_status_on_a_database_that_is_not_there_names_the_path_and_creates_nothing(tmp_path: Path) -> None:
    # E.g. the file was deleted under a run: "no runs yet" alone would read as a clean slate.
    r = cli(["--db", sqlite_url(tmp_path, "gone.db"), "status"])
    assert r.exit_code == 0 and f"no runs yet: there is no database at sqlite:///{tmp_path / 'gone.db'}" in r.stdout
    assert list(tmp_path.iterdir()) == []
