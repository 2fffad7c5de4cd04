"""Benchmark: one teardown of N running tasks, the simulator and the orchestrator each in its own process (bench
profile: releases 2-3 s, 20 ms latency, 200 calls/s per API). Run on demand:

    pytest -m bench tests/benchmarks/test_bench_scale.py -s -k sizes   # 100, 2,000 and 10,000 tasks
    BENCH_SCALE=2000 BENCH_REPEAT=3 pytest -m bench tests/benchmarks/test_bench_scale.py -s -k sizes
    pytest -m bench tests/benchmarks/test_bench_scale.py -s -k memory  # 50,000 tasks, for the peak RSS
    BENCH_CPROFILE=/tmp/prof BENCH_SCALE=10000 pytest -m bench tests/benchmarks/test_bench_scale.py -s -k sizes

The ids come from a file, as in a decommissioning pipeline (the limit counts no list calls). Printed per size,
one BENCH line with the medians over BENCH_REPEAT runs: the process wall (spawn to exit: start-up, plan, run,
the JSON document), the wall from the first API call to the run finished (from the trail), the limit (see
`procs.limit_for`), both ratios, API calls per task, and the orchestrator's peak RSS. Asserted: only correctness
(every task deleted, no simulator rule broken), never a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.procs import (
    PROJECT,
    RUN_ARGS,
    TOKEN,
    SimProcess,
    clean_env,
    limit_for,
    median,
    phases,
    repeats,
    run_cli,
    trail_figures,
)

pytestmark = pytest.mark.bench
SIZES = [int(s) for s in os.environ.get("BENCH_SCALE", "100,2000,10000").split(",")]


def teardown_once(tasks: int, workdir: Path, label: str, extra: list[str] | None = None) -> dict[str, Any]:
    """Seed a simulator process with `tasks` running tasks and tear them all down with `drs-teardown run`."""
    sim = SimProcess(tasks, workdir, project_id=PROJECT).start()
    try:
        jobs_file = sim.jobs_file(workdir / f"{label}.jobs.txt")
        db_url = f"sqlite:///{workdir / (label + '.db')}"
        env = clean_env(DRS_TEARDOWN_AUTH_TOKEN=TOKEN, DRS_TEARDOWN_PROJECT_ID=sim.project_id,
                        DRS_TEARDOWN_ENDPOINT=sim.url)
        done = run_cli(label, ["--db", db_url, "run", "--yes", "--output", "json", *RUN_ARGS,
                               "--jobs-file", str(jobs_file), *(extra or [])], env, workdir)
        assert done.code == 0, f"exit {done.code}\n{done.out[-2000:]}\n{done.err[-4000:]}"
        doc = done.doc()
        assert doc["counts"] == {"deleted": tasks}, doc["counts"]
        violations = sim.violations()
        requests = sim.get("/_sim/counters")["requests"]
    finally:
        sim.stop()
    assert not violations, violations
    trail = trail_figures(db_url, doc["run_id"])
    return {"wall": done.wall, "rss_mb": done.rss_mb, "served": requests, "phases": phases(done, trail), **trail}


def report(tasks: int, runs: list[dict[str, Any]]) -> str:
    limit = limit_for(tasks)
    split = {k: round(v, 2) for k, v in runs[-1]["phases"].items()}
    wall, inner = median([r["wall"] for r in runs]), median([r["first_call_to_finished"] for r in runs])
    calls = median([r["calls"] for r in runs])
    line = (f"BENCH scale tasks={tasks} runs={len(runs)} wall={wall:.2f}s (first call->finished {inner:.2f}s) "
            f"limit={limit:.2f}s ratio={wall / limit:.2f} (inner {inner / limit:.2f}) calls={calls:.0f} "
            f"calls/task={calls / tasks:.3f} peak_rss={median([r['rss_mb'] for r in runs]):.0f}MB "
            f"walls={[round(r['wall'], 2) for r in runs]} by_api={runs[-1]['by_api']} "
            f"requests_served={runs[-1]['served']} phases_s={split}")
    print("\n" + line)
    return line


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("tasks", SIZES)
def test_bench_sizes(tasks: int, tmp_path: Path) -> None:
    report(tasks, [teardown_once(tasks, tmp_path, f"scale{tasks}-{i}") for i in range(repeats())])


@pytest.mark.timeout(1800)
def test_bench_memory_50000_tasks(tmp_path: Path) -> None:
    tasks = int(os.environ.get("BENCH_MEMORY_TASKS", "50000"))
    report(tasks, [teardown_once(tasks, tmp_path, f"memory{tasks}")])
