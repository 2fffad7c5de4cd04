"""The console entry leaves without tearing the interpreter down (issue 16: the exit of a large run): its exit
code and every byte it wrote still arrive, through pipes larger than a pipe's buffer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.simulator import JobSpec
from tests.kit import PROJECT, TOKEN, simulator


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=300)


def test_a_large_document_and_the_exit_code_arrive_whole(tmp_path: Path) -> None:
    with simulator(jobs=0) as (sim, url):
        ids = sim.add_jobs(600, JobSpec(status="INCRE_TRANSFER_STARTED"))
        env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
               "DRS_TEARDOWN_DB": f"sqlite:///{tmp_path / 't.db'}"}
        planned = _cli(["plan", "--all", "--output", "json"], env, tmp_path)
        refused = _cli(["plan", "--all", "--max-targets", "1", "--output", "json"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)  # whole: more than a pipe's 64 KiB
    assert len(planned.stdout) > 65536 and sorted(i["job_id"] for i in doc["items"]) == sorted(ids)
    assert refused.returncode == json.loads(refused.stdout)["exit_code"] == 2
    usage = _cli(["run", "--al"], {}, tmp_path)
    assert usage.returncode == 1 and "--al" in usage.stderr


def test_under_a_profiler_the_ordinary_exit_runs_so_the_profile_is_written(tmp_path: Path) -> None:
    out = tmp_path / "p.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "orchestrator", "--version"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and out.stat().st_size > 0, done.stderr


def test_exit_functions_still_run(tmp_path: Path) -> None:
    """A script that registers an exit function and calls the console entry still gets it called."""
    mark = tmp_path / "ran"
    script = ("import atexit, pathlib, sys\n"
              f"atexit.register(lambda: pathlib.Path({str(mark)!r}).write_text('yes'))\n"
              "from orchestrator.cli import entry\n"
              "sys.argv = ['drs-teardown', '--version']\n"
              "entry()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and mark.read_text() == "yes", done.stderr
