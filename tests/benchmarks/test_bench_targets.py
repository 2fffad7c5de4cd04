"""Benchmark: K targets (regions) of N running tasks each — one `run --targets FILE` against K simulator
processes, against K `run`s one after the other; and on PostgreSQL, that one run with 1 process against K
(`run` plus K-1 `worker`s joining as soon as the run is recorded). Bench profile (releases 2-3 s, 20 ms
latency, 200 calls/s per API, per simulator: one gateway per region). AK/SK serves every target. Run on demand:

    pytest -m bench tests/benchmarks/test_bench_targets.py -s                 # K = 1, 2, 4; N = 1,000
    BENCH_TARGET_TASKS=2000 BENCH_TARGETS=1,2 pytest -m bench tests/benchmarks/test_bench_targets.py -s

Printed, one BENCH line per configuration: the process wall (for the sequential runs, their sum), the wall of
the slowest single-target run, the ratio one-run / sequential, calls per task, peak RSS, and for the workers
the deleted tasks by worker. Asserted: only correctness (every task deleted, no rule broken), never a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.procs import (
    AK,
    RUN_ARGS,
    SK,
    SimProcess,
    Spawned,
    clean_env,
    limit_for,
    run_cli,
    run_recorded,
    simulators,
    trail_figures,
)

pytestmark = pytest.mark.bench
N = int(os.environ.get("BENCH_TARGET_TASKS", "1000"))
KS = [int(k) for k in os.environ.get("BENCH_TARGETS", "1,2,4").split(",")]
ENV = clean_env(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK)


def targets_file(sims: list[SimProcess], workdir: Path) -> Path:
    tables = []
    for sim in sims:
        jobs = sim.jobs_file(workdir / f"{sim.region}.jobs.txt")
        tables.append(f'[[target]]\nlabel = "{sim.region}"\nendpoint = "{sim.url}"\nproject_id = "{sim.project_id}"\n'
                      f'jobs_file = "{jobs.name}"\n')
    path = workdir / "targets.toml"
    path.write_text("\n".join(tables))
    return path


def _check(done: Any, tasks: int) -> dict[str, Any]:
    assert done.code == 0, f"exit {done.code}\n{done.out[-2000:]}\n{done.err[-4000:]}"
    doc = done.doc()
    assert doc["counts"] == {"deleted": tasks}, doc["counts"]
    return doc


def one_run(k: int, workdir: Path) -> dict[str, Any]:
    with simulators(k, N, workdir) as sims:
        path = targets_file(sims, workdir)
        db_url = f"sqlite:///{workdir / f'one{k}.db'}"
        done = run_cli(f"one{k}", ["--db", db_url, "run", "--yes", "--output", "json", *RUN_ARGS,
                                   "--targets", str(path)], ENV, workdir)
        violations = {s.region: s.violations() for s in sims}
    doc = _check(done, k * N)
    assert not any(violations.values()), violations
    return {"wall": done.wall, "rss_mb": done.rss_mb, **trail_figures(db_url, doc["run_id"])}


def sequential_runs(k: int, workdir: Path) -> dict[str, Any]:
    walls, rss, calls = [], [], 0
    with simulators(k, N, workdir) as sims:
        for sim in sims:
            db_url = f"sqlite:///{workdir / f'seq{k}-{sim.region}.db'}"
            jobs = sim.jobs_file(workdir / f"seq-{sim.region}.jobs.txt")
            done = run_cli(f"seq{k}-{sim.region}", [
                "--db", db_url, "run", "--yes", "--output", "json", *RUN_ARGS, "--endpoint", sim.url,
                "--project-id", sim.project_id, "--jobs-file", str(jobs)], ENV, workdir)
            doc = _check(done, N)
            walls.append(done.wall)
            rss.append(done.rss_mb)
            calls += trail_figures(db_url, doc["run_id"])["calls"]
            assert not sim.violations()
    return {"wall": sum(walls), "slowest": max(walls), "rss_mb": max(rss), "calls": calls}


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("k", KS)
def test_bench_targets_one_run_vs_one_after_the_other(k: int, tmp_path: Path) -> None:
    one = one_run(k, tmp_path)
    seq = sequential_runs(k, tmp_path)
    tasks = k * N
    print(f"\nBENCH targets K={k} N={N} tasks={tasks} one_run wall={one['wall']:.2f}s "
          f"(first call->finished {one['first_call_to_finished']:.2f}s) sequential wall={seq['wall']:.2f}s "
          f"(slowest single run {seq['slowest']:.2f}s) one/sequential={one['wall'] / seq['wall']:.2f} "
          f"one/slowest={one['wall'] / seq['slowest']:.2f} single-target limit={limit_for(N):.2f}s "
          f"calls/task one={one['calls'] / tasks:.3f} sequential={seq['calls'] / tasks:.3f} "
          f"peak_rss one={one['rss_mb']:.0f}MB sequential={seq['rss_mb']:.0f}MB")


@pytest.mark.postgres
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("workers", sorted({1, max(KS)}))
def test_bench_targets_postgresql_workers(pg_url: str, tmp_path: Path, workers: int) -> None:
    k = max(KS)
    with simulators(k, N, tmp_path) as sims:
        path = targets_file(sims, tmp_path)
        started = time.perf_counter()
        run = Spawned("run", ["--db", pg_url, "run", "--yes", "--output", "json", *RUN_ARGS, "--targets", str(path)],
                      ENV, tmp_path)
        extra = []
        if workers > 1:
            while not run_recorded(pg_url) and run.proc.poll() is None:
                time.sleep(0.02)
            # (a run still planning is joined when its plan is recorded: the workers wait for it)
            extra = [Spawned(f"worker{i}", ["--db", pg_url, "worker", "--wait-for-runs", "60", *RUN_ARGS], ENV,
                             tmp_path)
                     for i in range(1, workers)]
        finished = [run.reap(started), *(w.reap(started) for w in extra)]
        violations = {s.region: s.violations() for s in sims}
    codes = {f.name: f.code for f in finished}
    assert set(codes.values()) == {0}, f"{codes}\n" + "\n".join(f.err[-2000:] for f in finished)
    doc = _check(finished[0], k * N)
    assert not any(violations.values()), violations
    by_worker = _deleted_by_worker(pg_url, doc["run_id"])
    wall = max(f.ended_at for f in finished)
    calls = trail_figures(pg_url, doc["run_id"])["calls"]
    print(f"\nBENCH targets postgresql K={k} N={N} workers={workers} wall={wall:.2f}s "
          f"(run exits {finished[0].ended_at:.2f}s) calls/task={calls / (k * N):.3f} "
          f"peak_rss max={max(f.rss_mb for f in finished):.0f}MB deleted_by_worker={by_worker}")


def _deleted_by_worker(db_url: str, run_id: str) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select worker, count(*) from audit_records where run_id = :r and "
                                     "trigger = 'deleted' group by worker"), {"r": run_id}).all()
    finally:
        engine.dispose()
    return sorted((n for _, n in rows), reverse=True)
