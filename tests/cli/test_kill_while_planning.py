"""A kill at any moment is resumable (issue 13), with real processes: SIGKILL while `run --yes` is still planning
(just after its first batch-detail call) leaves a run that `status` shows interrupted, naming its dead owner, and
that `resume` plans and finishes; the pipeline form `run … || resume` ends with everything deleted, exit 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

from orchestrator.store.repo import Store
from tests.kit import PROJECT, TOKEN, add, simulator

KILL_AFTER_FIRST_DETAIL = "after_send:detail:1"  # SIGKILL once the first batch-detail answer is in


def _env(url: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
                "DRS_TEARDOWN_DB": db})
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def _each_once(sim: object, jobs: list[str]) -> None:
    calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)  # type: ignore[attr-defined]
    assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] == 1 for j in jobs), calls


def test_sigkill_while_planning_then_resume_deletes_everything(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'run.db'}"
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 35, status="INCRE_TRANSFER_STARTED")  # 4 batch-detail calls to plan
        env = _env(url, db)
        killed = _cli(["run", "--all", "--yes", "--poll-interval", "0.05", "--output", "json"],
                      {**env, "DRS_TEARDOWN_CRASH_AT": KILL_AFTER_FIRST_DETAIL}, tmp_path)
        assert killed.returncode == -9, killed.stderr
        assert sim.destructive_calls == []  # killed while planning: nothing sent yet
        # The run was recorded before planning: a dead run, shown interrupted with who held it and since when.
        shown = _cli(["status"], env, tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "interrupted" in shown.stdout and "recorded planning, but process " in shown.stdout
        assert f" on {socket.gethostname()} " in shown.stdout and " since 20" in shown.stdout
        (listed,) = json.loads(_cli(["status", "--output", "json"], env, tmp_path).stdout)["runs"]
        assert listed["status"] == "interrupted" and "is gone: resumable" in listed["detail"]
        resumed = _cli(["resume", "--poll-interval", "0.05", "--output", "json"], env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        doc = json.loads(resumed.stdout)
        assert doc["run_id"] == listed["run_id"] and doc["counts"] == {"deleted": len(jobs)}
        _each_once(sim, jobs)
        again = _cli(["resume", "--output", "json"], env, tmp_path)
        assert again.returncode == 0 and "nothing to resume" in json.loads(again.stdout)["message"]
    store = Store(db)
    (run,) = store.runs()
    assert run.status == "finished" and store.verify(run.id).ok
    triggers = [r.trigger for r in store.records(run.id)]
    assert triggers[0] == "run_recorded" and "run_resumed" in triggers and triggers[-1] == "run_finished"
    store.close()


def test_the_pipeline_run_or_resume_reports_success_only_with_everything_deleted(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'run.db'}"
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 35, status="INCRE_TRANSFER_STARTED")
        env = {**_env(url, db), "PY": sys.executable, "KILL": KILL_AFTER_FIRST_DETAIL}
        line = ('DRS_TEARDOWN_CRASH_AT="$KILL" "$PY" -m orchestrator run --all --yes --poll-interval 0.05 '
                '--output json > run.json || "$PY" -m orchestrator resume --poll-interval 0.05 --output json')
        done = subprocess.run(["sh", "-c", line], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "run.json").read_text() == ""  # the run was killed: the resume did the work
        doc = json.loads(done.stdout)
        assert doc["exit_code"] == 0 and doc["counts"] == {"deleted": len(jobs)}
        assert all(sim.status_of(j) in ("DELETED", None) for j in jobs)
        _each_once(sim, jobs)
