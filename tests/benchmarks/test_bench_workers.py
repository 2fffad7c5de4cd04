"""Benchmark: the 2,000-task teardown (bench profile: releases 2-3 s, 20 ms latency, 200 calls/s per API)
with 1, 2 and 4 workers on PostgreSQL, against one process on SQLite. Run on demand:

    pytest -m bench tests/benchmarks/test_bench_workers.py -s

`run --yes` is the first worker; the extra `worker` processes start as soon as the run is recorded (a pipeline
cannot start them earlier: a worker with nothing to do exits). Wall time is from starting `run` to the last
process exiting. The figures are printed, one BENCH line per configuration; the asserts are about correctness
(every task deleted, no broken rule, one intact chain), not speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import JobSpec
from orchestrator.store.repo import Store
from tests.benchmarks.procs import run_recorded
from tests.kit import PROJECT, TOKEN, simulator

N = int(os.environ.get("BENCH_TASKS", "2000"))
LIMIT = (N / 10) / 200 + 3.0 + 0.06  # see test_bench_teardown.py
ARGS = ["--poll-interval", "0.5", "--rate", "190"]


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_"))}
    env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                "DRS_TEARDOWN_ENDPOINT": url})
    return env


def _measure(db_url: str, url: str, jobs_file: Path, tmp_path: Path, workers: int,
             claim_size: int | None = None) -> dict[str, Any]:
    env = _env(url)
    if claim_size is not None:
        env["DRS_TEARDOWN_CLAIM_SIZE"] = str(claim_size)
    base = [sys.executable, "-m", "orchestrator", "--db", db_url]
    files = []

    def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out, err = (tmp_path / f"{name}.out").open("wb"), (tmp_path / f"{name}.err").open("wb")
        files.extend([out, err])
        # Files, not pipes: a pipe would fill up and stall the child; wait4 gives each child's own peak RSS.
        return subprocess.Popen([*base, *args], env=env, stdout=out, stderr=err)

    started = time.perf_counter()
    procs = {"run": spawn("run", ["run", "--yes", "--output", "json", *ARGS, "--jobs-file", str(jobs_file)])}
    if workers > 1:
        while not run_recorded(db_url) and procs["run"].poll() is None:
            time.sleep(0.02)
        joined_at = time.perf_counter() - started
        for i in range(1, workers):
            procs[f"worker{i}"] = spawn(f"worker{i}", ["worker", "--wait-for-runs", "60", *ARGS])
    rss, codes, ended = {}, {}, {}
    for name, proc in procs.items():
        _, status, usage = os.wait4(proc.pid, 0)
        ended[name] = time.perf_counter() - started
        rss[name], codes[name] = usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)
    for f in files:
        f.close()
    logs = "\n".join(f"--- {n}\n{(tmp_path / f'{n}.err').read_text()[-2000:]}" for n in procs)
    assert set(codes.values()) == {0}, f"{codes}\n{logs}"
    doc = json.loads((tmp_path / "run.out").read_text())
    assert doc["counts"] == {"deleted": N}, doc["counts"]
    store = Store(db_url, migrate=False)
    try:
        run_id = doc["run_id"]
        assert store.verify(run_id).ok
        records = store.records(run_id)
        calls = store.api_calls(run_id)
    finally:
        store.close()
    by_worker: dict[str, int] = {}
    for r in records:
        if r.trigger == "deleted":
            by_worker[r.worker] = by_worker.get(r.worker, 0) + 1
    span = (max(c.at for c in calls) - min(c.at for c in calls)).total_seconds()
    return {"wall": max(ended.values()), "run_exit": ended["run"], "calls": len(calls), "api_span": span,
            "rss_max": max(rss.values()), "rss_sum": sum(rss.values()),
            "deleted_by_worker": sorted(by_worker.values(), reverse=True),
            "takeovers": sum(1 for r in records if r.trigger == "takeover"),
            "joined_at": joined_at if workers > 1 else 0.0}


def _report(label: str, m: dict[str, Any], sim_violations: dict[str, int]) -> None:
    print(f"\nBENCH {label} tasks={N} wall={m['wall']:.2f}s (run exits {m['run_exit']:.2f}s) "
          f"limit={LIMIT:.2f}s "
          f"ratio={m['wall'] / LIMIT:.2f} api_span={m['api_span']:.2f}s calls={m['calls']} "
          f"calls/task={m['calls'] / N:.3f} peak_rss max={m['rss_max']:.0f}MB sum={m['rss_sum']:.0f}MB "
          f"deleted_by_worker={m['deleted_by_worker']} takeovers={m['takeovers']} "
          f"workers_joined_at={m['joined_at']:.2f}s violations={sim_violations}")


def _jobs(tmp_path: Path, ids: list[str]) -> Path:
    # The ids come from a file, as in a decommissioning pipeline: the limit counts no list calls.
    path = tmp_path / "jobs.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


@pytest.mark.bench
def test_bench_2000_tasks_sqlite_one_process(tmp_path: Path) -> None:
    with simulator(profile="bench", seed=11) as (sim, url):
        ids = sim.add_jobs(N, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        m = _measure(f"sqlite:///{tmp_path / 'bench.db'}", url, _jobs(tmp_path, ids), tmp_path, 1)
        violations = dict(sim.violations)
    _report("sqlite workers=1", m, violations)
    assert not violations


@pytest.mark.bench
@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_bench_2000_tasks_postgresql_workers(pg_url: str, tmp_path: Path, workers: int) -> None:
    with simulator(profile="bench", seed=11) as (sim, url):
        ids = sim.add_jobs(N, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        m = _measure(pg_url, url, _jobs(tmp_path, ids), tmp_path, workers)
        violations = dict(sim.violations)
    _report(f"postgresql workers={workers}", m, violations)
    assert not violations
    assert len(m["deleted_by_worker"]) <= workers


@pytest.mark.bench
@pytest.mark.postgres
def test_bench_2000_tasks_postgresql_one_worker_claiming_everything(pg_url: str, tmp_path: Path) -> None:
    """What batch claims cost a lone worker: the same run with --claim-size covering the whole run."""
    with simulator(profile="bench", seed=11) as (sim, url):
        ids = sim.add_jobs(N, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        m = _measure(pg_url, url, _jobs(tmp_path, ids), tmp_path, 1, claim_size=N)
        violations = dict(sim.violations)
    _report(f"postgresql workers=1 claim_size={N}", m, violations)
    assert not violations
