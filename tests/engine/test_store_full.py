"""A disk that fills up mid-run (issue 13): the run stops, exits 4 with a JSON document naming the database, and
is not left `running`: it is recorded interrupted when the store still can be written, and shown interrupted
(naming its dead owner) otherwise; `resume` then finishes it. Real processes, on a private, small tmpfs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator import usecases
from orchestrator.errors import StoreError
from orchestrator.selection import Selection
from orchestrator.store.repo import Store
from tests.kit import PROJECT, TOKEN, add, settings, simulator, sqlite_url

REPO = Path(__file__).resolve().parents[2]
ENV = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}

# Inside its own mount namespace: a 4 MiB tmpfs holds the database; once the test says go, a filler takes every
# byte left; after the run has ended, `status` reads the full store, then the filler goes and the files are
# copied out (the tmpfs dies with the namespace).
SCRIPT = """
set -e
mount -t tmpfs -o size=4m tmpfs "$M"
"$PY" -m orchestrator --db "sqlite:///$M/run.db" run --all --yes --poll-interval 0.05 --output json \
    > "$T/run.json" 2> "$T/run.err" &
pid=$!
while [ ! -f "$T/go" ]; do sleep 0.02; done
dd if=/dev/zero of="$M/fill" bs=4096 2>/dev/null || true
set +e
wait $pid; echo $? > "$T/rc"
"$PY" -m orchestrator --db "sqlite:///$M/run.db" status --output json > "$T/status.json" 2> "$T/status.err"
rm -f "$M/fill"
cp "$M/run.db" "$M/run.db-wal" "$M/run.db-shm" "$T/out/"
"""


def test_a_disk_full_mid_run_exits_4_and_leaves_the_run_interrupted(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private tmpfs")
    mount, out = tmp_path / "small", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 30, status="INCRE_TRANSFER_STARTED", never_releases=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
        env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                    "DRS_TEARDOWN_ENDPOINT": url, "PYTHONPATH": str(REPO), "PY": sys.executable,
                    "M": str(mount), "T": str(tmp_path)})
        proc = subprocess.Popen(["unshare", "-m", "sh", "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(sim.destructive_calls) < len(jobs) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None and "mount" in (proc.stderr.read() if proc.stderr else ""):
            pytest.skip("cannot mount a tmpfs here")
        assert len(sim.destructive_calls) == len(jobs), "the run never stopped its tasks"
        (tmp_path / "go").write_text("go")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        # The disk is full: the run stops sending and exits 4, naming the database.
        rc = int((tmp_path / "rc").read_text())
        doc = json.loads((tmp_path / "run.json").read_text())
        assert rc == doc["exit_code"] == 4, (tmp_path / "run.err").read_text()[-2000:]
        assert "disk is full" in doc["error"] and str(mount / "run.db") in doc["error"]
        # Read from the full disk: not running (its owner is gone).
        (shown,) = json.loads((tmp_path / "status.json").read_text())["runs"]
        assert shown["status"] == "interrupted", shown
        assert {c["delete_type"] for c in sim.destructive_calls} == {"terminate"}
        # Once there is room again the run is resumable: recorded interrupted by the next writing command.
        store = Store(f"sqlite:///{out / 'run.db'}")
        (run,) = store.runs()
        assert store.run_status(run).status == "interrupted"
        # (The disk was full: it could not be recorded, so it is shown interrupted, naming its dead owner.)
        assert "is gone: resumable" in (store.run_status(run).detail or "")
        assert store.verify(run.id).ok
        store.close()


def test_a_store_failure_the_store_survives_records_the_run_interrupted_and_resume_finishes_it(
        tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 6, status="INCRE_TRANSFER_STARTED")
        s = settings(url, db)
        store = Store(db)
        real, calls = store.apply, []

        def apply(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:  # after the stops were recorded: one write the disk refuses
                raise StoreError(f"database error on {db}: database or disk is full")
            return real(*args, **kwargs)

        store.apply = apply  # type: ignore[method-assign]
        td = usecases.Teardown(s, ENV, selection=Selection(all=True), consent="test", store=store)

        async def go() -> None:
            await td.plan()
            td.record()
            await td.execute()

        with pytest.raises(StoreError, match="disk is full"):
            asyncio.run(go())
        run = store.run(td.run_id)  # type: ignore[arg-type]
        assert run is not None and run.status == "interrupted"
        last = store.records(run.id)[-1]
        assert last.trigger == "run_interrupted" and "the store failed mid-run" in (last.detail or "")
        store.close()
        store = Store(db)
        run = usecases.pick_run(store, None)
        assert run is not None and run.id == td.run_id
        summary = asyncio.run(usecases.prepare_resume(store, run, s.model_copy(update={"project_id": None}), ENV,
                                                      {}).execute())
        assert summary.exit_code == 0 and summary.counts == {"deleted": len(jobs)}
        calls_by = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        assert all(calls_by[(j, "terminate")] == 1 and calls_by[(j, "delete")] == 1 for j in jobs), calls_by
        assert store.verify(run.id).ok
        store.close()
