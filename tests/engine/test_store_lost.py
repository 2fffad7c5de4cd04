"""The store notices being lost (issue 13): a run whose database file is unlinked mid-way stops sending and
exits 4, naming the file — it never reports success with its trail gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.kit import PROJECT, TOKEN, add, simulator


def test_a_run_whose_database_is_unlinked_mid_way_exits_4_naming_the_file(tmp_path: Path) -> None:
    db_file = tmp_path / "run.db"
    with simulator(profile="fast") as (sim, url):
        add(sim, 20, status="INCRE_TRANSFER_STARTED", never_releases=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
        env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                    "DRS_TEARDOWN_ENDPOINT": url})
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "--db", f"sqlite:///{db_file}", "run", "--all",
                                 "--yes", "--poll-interval", "0.2", "--output", "json"], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not sim.destructive_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.destructive_calls, "the run never stopped a task"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    doc = json.loads(out)
    assert doc["exit_code"] == 4 and str(db_file) in doc["error"]
    assert not db_file.exists()  # nothing recreated an empty database in its place
