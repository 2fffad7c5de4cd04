"""Seeded worlds, bulk seeding, and profile loading."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orchestrator.drs.codes import ALL_STATUSES, WAIT
from orchestrator.simulator import JobSpec, ManualClock, Simulator, load_profile


def _world(seed: int, jobs: int = 40) -> Simulator:
    return Simulator(seed=seed, jobs=jobs, profile="fast", clock=ManualClock())


def test_same_seed_same_world() -> None:
    a, b = _world(7), _world(7)
    assert list(a.jobs) == list(b.jobs)
    strip = ("gtid", "incre_start_position")
    assert [{k: v for k, v in j.items() if k not in strip} for j in a.jobs.values()] == [
        {k: v for k, v in j.items() if k not in strip} for j in b.jobs.values()
    ]
    assert set(_world(8).jobs).isdisjoint(a.jobs)


def test_forty_jobs_mix() -> None:
    sim = _world(7)
    jobs = sim.jobs
    assert len(jobs) == 40  # every task record, children included
    kinds = Counter(j["kind"] for j in jobs.values())
    assert kinds["dual_parent"] == 1 and kinds["dual_child"] == 2 and kinds["reedit_child"] >= 1
    parent = next(j for j in jobs.values() if j["kind"] == "dual_parent")
    assert (
        parent["db_use_type"] == "cloudDataGuard" and parent["multi_write"] and len(parent["child_ids"]) == 2
    )
    period = [j for j in jobs.values() if j["period_order"]]
    assert len(period) == 2 and all(j["db_use_type"] in ("sync", "cloudDataGuard") for j in period)
    assert all(j["period_order"]["order_id"] for j in period)
    child = next(j for j in jobs.values() if j["kind"] == "reedit_child")
    assert child["status"].startswith("CHILD_TRANSFER_") and jobs[child["parent_id"]]["db_use_type"] == "sync"
    assert {j["db_use_type"] for j in jobs.values()} == {"migration", "sync", "cloudDataGuard"}
    assert all(j["status"] in ALL_STATUSES for j in jobs.values())


def test_larger_world_covers_many_statuses() -> None:
    sim = _world(1, jobs=400)
    statuses = Counter(j["status"] for j in sim.jobs.values())
    assert len(statuses) >= 15
    assert statuses.most_common(1)[0][0] == "INCRE_TRANSFER_STARTED"
    for s in (
        "CREATE_FAILED",
        "RELEASE_RESOURCE_COMPLETE",
        "CREATING",
        "STARTJOBING",
        "PAUSING",
        "CONFIGURATION",
        "FULL_TRANSFER_COMPLETE",
        "INCRE_TRANSFER_FAILED",
    ):
        assert statuses[s] > 0, s


def test_transitional_seeds_settle_by_themselves() -> None:
    clock = ManualClock()
    sim = Simulator(seed=1, jobs=400, profile="fast", clock=clock)
    assert any(j["status"] in WAIT for j in sim.jobs.values())
    clock.advance(10)
    assert not any(j["status"] in WAIT for j in sim.jobs.values())


def test_one_status_seeding_for_benchmarks() -> None:
    sim = Simulator(
        seed=3, jobs=500, job_status="INCRE_TRANSFER_STARTED", profile="fast", clock=ManualClock()
    )
    jobs = sim.jobs
    assert len(jobs) == 500
    assert {j["status"] for j in jobs.values()} == {"INCRE_TRANSFER_STARTED"}
    assert not any(j["period_order"] or j["child_ids"] for j in jobs.values())


def test_add_jobs() -> None:
    sim = Simulator(profile="fast", clock=ManualClock())
    ids = sim.add_jobs(3, JobSpec(status="PAUSING", name="bulk"))
    assert [sim.jobs[i]["name"] for i in ids] == ["bulk-00000", "bulk-00001", "bulk-00002"]
    assert {sim.status_of(i) for i in ids} == {"PAUSING"}
    assert sim.status_of("00000000-0000-4000-8000-000000000000") is None


@pytest.mark.parametrize("name", ["calm", "rough", "bench", "fast"])
def test_shipped_profiles_load(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert set(p.faults) >= {"default", "batch-jobs", "batch-status", "batch-detail", "list", "tokens"}


def test_profile_contents() -> None:
    calm, rough, bench, fast = (load_profile(n) for n in ("calm", "rough", "bench", "fast"))
    assert (
        calm.release_seconds == (2.0, 4.0)
        and calm.release_fail_rate == 0
        and calm.deleted_retention_seconds == 60
    )
    assert all(
        f.error_5xx_rate == 0 and f.throttle_rate == 0 and f.busy_rate == 0 for f in calm.faults.values()
    )
    jobs = rough.faults_for("batch-jobs")
    assert rough.release_fail_rate > 0 and jobs.busy_rate > 0 and jobs.throttle_rate > 0
    assert (
        jobs.drop_after_rate > 0
        and jobs.drop_before_rate > 0
        and jobs.error_5xx_rate > 0
        and jobs.latency_ms > 0
    )
    assert bench.release_seconds == (2.0, 3.0)
    assert all(
        bench.faults_for(r).throttle_rate == 200 and bench.faults_for(r).latency_ms == 20
        for r in ("list", "batch-status", "batch-detail", "batch-jobs")
    )
    assert fast.release_seconds[1] <= 0.2


def test_profile_from_path_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text("[timing]\nrelease_seconds = 1\n[faults.batch-jobs]\nbusy_rate = 0.5\n")
    p = load_profile(good)
    assert (
        p.name == "mine" and p.release_seconds == (1.0, 1.0) and p.faults_for("batch-jobs").busy_rate == 0.5
    )
    for text in (
        "[timing]\nrelease_secs = 1\n",
        "[faults.batch-jobz]\n",
        "[behaviour]\nrelease_fail_rate = 2\n",
        "[timing]\nrelease_seconds = [3, 1]\n",
        "[weather]\n",
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError):
            load_profile(bad)
    with pytest.raises(ValueError, match=r"known: .*calm"):
        load_profile("nonexistent")
