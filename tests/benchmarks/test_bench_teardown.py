"""Benchmark: tear down 2,000 running tasks on the simulator (bench profile: releases 2–3 s, 20 ms latency,
200 calls/s per API). Run on demand: `pytest -m bench tests/benchmarks -s`.

The limit no client can beat: the batch-detail calls the plan needs (2,000 / 10 = 200 calls at 200/s = 1.0 s),
plus the slowest release (3.0 s), plus three round trips (0.06 s) = 4.06 s.
Targets: wall ≤ 1.5 × limit, ≤ 0.15 API calls per task, peak RSS ≤ 200 MB (the orchestrator process alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from orchestrator.simulator import JobSpec
from tests.kit import PROJECT, TOKEN, simulator

N = int(os.environ.get("BENCH_TASKS", "2000"))
LIMIT = (N / 10) / 200 + 3.0 + 0.06


def _measure(db_url: str, url: str, extra: list[str] | None = None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_"))}
    env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url})
    args = ["--db", db_url, "run", "--yes", "--output", "json", "--poll-interval", "0.5",
            "--rate", "190", *(extra or [])]
    out_path, err_path = Path(db_url[len("sqlite:///"):] + ".out"), Path(db_url[len("sqlite:///"):] + ".err")
    started = time.perf_counter()
    with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
        # Files, not pipes: a pipe would fill up and stall the child; wait4 gives the child's own peak RSS.
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], env=env, stdout=out_f, stderr=err_f)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = out_path.read_text(), err_path.read_text()
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"exit {code}\n{out[-2000:]}\n{err[-4000:]}"
    doc = json.loads(out)
    assert doc["counts"] == {"deleted": N}, doc["counts"]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        calls = conn.execute(text("select count(*) from api_calls")).scalar_one()
        by_api = dict(conn.execute(text("select api, count(*) from api_calls group by api")).all())
        t0, t1 = conn.execute(text("select min(at), max(at) from api_calls")).one()
        phases = {api: (_ts(a) - _ts(t0), _ts(b) - _ts(t0)) for api, a, b in conn.execute(
            text("select api, min(at), max(at) from api_calls group by api")).all()}
        statuses = dict(conn.execute(
            text("select coalesce(http_status, -1), count(*) from api_calls group by 1")).all())
        run_created, run_finished = conn.execute(text("select created_at, finished_at from runs")).one()
        polls = [round(_ts(a) - _ts(t0), 2) for (a,) in conn.execute(
            text("select at from api_calls where api = 'batch-status' order by at")).all()]
        jobs_calls = [round(_ts(a) - _ts(t0), 2) for (a,) in conn.execute(
            text("select at from api_calls where api = 'batch-jobs' order by at")).all()]
        print("\npolls at", polls, "\nbatch-jobs at", jobs_calls)
        triggers = {trig: (_ts(a) - _ts(t0), _ts(b) - _ts(t0)) for trig, a, b in conn.execute(
            text("select trigger, min(at), max(at) from audit_records group by trigger")).all()}
    engine.dispose()
    print(f"\nphases (s from the first call): {{{', '.join(f'{k}: {a:.2f}-{b:.2f}' for k, (a, b) in phases.items())}}}"
          f" http statuses {statuses}; run recorded {_ts(run_created) - _ts(t0):.2f}s, "
          f"finished {_ts(run_finished) - _ts(t0):.2f}s after the first call")
    ordered = sorted(triggers.items(), key=lambda kv: kv[1])
    print(f"transitions: {{{', '.join(f'{k}: {a:.2f}-{b:.2f}' for k, (a, b) in ordered)}}}")
    return {"wall": wall, "calls": calls, "rss_mb": usage.ru_maxrss / 1024, "by_api": by_api,
            "teardown": _ts(run_finished) - _ts(t0),
            "api_span": (_ts(t1) - _ts(t0)) if t0 and t1 else 0.0}


def _ts(value: object) -> float:
    from datetime import datetime

    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(str(value)).timestamp()


@pytest.mark.bench
def test_bench_2000_tasks_sqlite(tmp_path: Path) -> None:
    with simulator(profile="bench", seed=11) as (sim, url):
        ids = sim.add_jobs(N, JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="sync"))
        # The ids come from a file, as in a decommissioning pipeline: the limit counts no list calls.
        jobs_file = tmp_path / "jobs.txt"
        jobs_file.write_text("\n".join(ids) + "\n")
        m = _measure(f"sqlite:///{tmp_path / 'bench.db'}", url, ["--jobs-file", str(jobs_file)])
        violations = dict(sim.violations)
    per_task = m["calls"] / N
    print(f"\nBENCH sqlite tasks={N} wall={m['wall']:.2f}s limit={LIMIT:.2f}s ratio={m['wall'] / LIMIT:.2f} "
          f"teardown(first call->finished)={m['teardown']:.2f}s ratio={m['teardown'] / LIMIT:.2f} "
          f"api_span={m['api_span']:.2f}s calls={m['calls']} calls/task={per_task:.3f} by_api={m['by_api']} "
          f"peak_rss={m['rss_mb']:.0f}MB violations={violations}")
    assert not violations
