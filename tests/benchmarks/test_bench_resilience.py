"""Benchmark: the same seeded 40-task worlds torn down under the real `calm` and `rough` profiles, and under
`rough-quiet` (rough's slow and failing transitions without its network and API faults), so the difference
between the last two is what the faults cost. Prints wall times, client retries per fault class, engine
counters, HTTP answers and the retries in the trail.
Run on demand: `pytest -m bench tests/benchmarks/test_bench_resilience.py -s` (BENCH_SEEDS=1,2,3 to choose).

Correctness is asserted (every task the plan allows deleted, zero rule violations); time is only reported.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator.drs.codes import DELETABLE
from orchestrator.simulator import Profile, load_profile
from tests.kit import simulator, sqlite_url, teardown
from tests.test_resilience import retry_report

SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "1,2,3").split(",")]
JOBS = int(os.environ.get("BENCH_RESILIENCE_TASKS", "40"))
POLL = 1.0  # the demo's poll interval
PROFILES = ("calm", "rough-quiet", "rough")


def _profile(name: str) -> str | Profile:
    if name == "rough-quiet":
        return load_profile("rough").with_overrides(name="rough-quiet", faults={})
    return name


def _one(profile: str, seed: int, tmp_path: Path) -> dict[str, Any]:
    with simulator(jobs=JOBS, seed=seed, profile=_profile(profile)) as (sim, url):  # type: ignore[arg-type]
        started = time.perf_counter()
        td = teardown(sim, url, sqlite_url(tmp_path, f"{profile}-{seed}.db"), poll_interval=POLL)
        wall = time.perf_counter() - started
        violations = {k: n for k, n in sim.violations.items() if n}
        deletes = [c for c in sim.destructive_calls if c["delete_type"] == "delete"]
    assert violations == {}
    assert all(c["status_before"] in DELETABLE for c in deletes)
    tasks = td.store.tasks(td.run_id)
    allowed = [t for t in tasks if t.planned_action in ("stop_then_delete", "delete", "wait")]
    assert [t.job_id for t in allowed if t.state.value != "deleted"] == []
    return {"wall": wall, "counts": td.summary.counts, **retry_report(td)}


@pytest.mark.bench
def test_rough_against_calm(tmp_path: Path) -> None:
    totals: dict[str, Counter[str]] = {p: Counter() for p in PROFILES}
    walls: dict[str, list[float]] = {p: [] for p in PROFILES}
    for seed in SEEDS:
        for profile in PROFILES:
            r = _one(profile, seed, tmp_path)
            walls[profile].append(r["wall"])
            print(f"\n{profile} seed {seed}: {r['wall']:.1f}s {r['counts']} calls={r['calls']}")
            for key in ("client", "engine", "http", "errors", "trail"):
                totals[profile].update({f"{key} {k}": n for k, n in r[key].items()})
            totals[profile]["calls"] += r["calls"]
    for profile in PROFILES:
        mean = sum(walls[profile]) / len(walls[profile])
        print(f"\n{profile}: wall {', '.join(f'{w:.1f}' for w in walls[profile])} s (mean {mean:.1f} s) over "
              f"seeds {SEEDS}, {JOBS} tasks each, poll interval {POLL:g}s")
        print(json.dumps(dict(sorted(totals[profile].items())), indent=1))
