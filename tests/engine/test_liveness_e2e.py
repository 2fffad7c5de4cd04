"""Liveness end to end over loopback (issue 12): a teardown converges through bad, partial and stale answers and
drift between plan and action, with every rule of the service kept and no destructive call repeated blindly;
and --timeout is a hard budget against a trickling service."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.simulator import Simulator
from tests.kit import Teardown, add, simulator, sqlite_url, teardown

BAD_READS = ["not_json", "truncated", "results_null", "array", "unknown_status", "missing_ids", "stale"]


def _destructive(sim: Simulator) -> Counter[tuple[str, str]]:
    return Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)


def _converged(td: Teardown, sim: Simulator, jobs: list[str], *, per_type: int = 1) -> None:
    assert td.outcomes == dict.fromkeys(jobs, "deleted"), [(j["job_id"][:8], j["outcome"], j["reason"])
                                                          for j in td.summary.jobs if j["outcome"] != "deleted"]
    assert not any(sim.violations.values()), sim.violation_log
    calls = _destructive(sim)
    assert max(calls.values()) <= per_type, {k: n for k, n in calls.items() if n > per_type}
    assert td.summary.exit_code == 0 and td.store.verify(td.run_id).ok


@pytest.mark.parametrize("fault", BAD_READS)
def test_one_bad_batch_status_answer_never_ends_a_task(fault: str, tmp_path: Path) -> None:
    """150 running tasks; the first poll after the stops gets one bad answer (a 100-id chunk): all deleted."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 150, status="INCRE_TRANSFER_STARTED")
        sim.set_fault("batch-status", fault, times=1)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        _converged(td, sim, jobs)
        assert sim.faults_served[f"batch-status:{fault}"] == 1


@pytest.mark.parametrize("shape", ["failing", "all"])
def test_a_400_naming_one_unknown_id_does_not_end_the_others(shape: str, tmp_path: Path) -> None:
    """batch-detail and batch-status answer an unknown id with a 400 whose results list only that id, or every
    id: either way the others are read and deleted, and the unknown one ends skipped (not found)."""
    with simulator(profile="fast") as (sim, url):
        sim.configure(unknown_id_results=shape)
        jobs = add(sim, 9, status="INCRE_TRANSFER_STARTED")
        ghost = "deadbeef-0000-4000-8000-00000000dead"
        from orchestrator.planning import Selection

        td = teardown(sim, url, sqlite_url(tmp_path), Selection(job_ids=(*jobs, ghost)), poll_interval=0.05)
    assert {j: td.outcomes[j] for j in jobs} == dict.fromkeys(jobs, "deleted")
    assert td.outcomes[ghost] == "skipped"
    assert not any(sim.violations.values())


@pytest.mark.parametrize(("change", "start"), [("restart", "RELEASE_RESOURCE_COMPLETE"),
                                               ("deletable", "INCRE_TRANSFER_STARTED")])
def test_drift_between_plan_and_action_is_read_again_not_repeated(change: str, start: str,
                                                                  tmp_path: Path) -> None:
    """The status changes right after the plan read it: the refused action is followed by a fresh detail read and
    a decision on that, never a blind repeat; every task ends deleted."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 4, status=start, db_use_type="migration")
        for j in jobs:
            sim.drift(j, change, after_reads=1)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        assert td.outcomes == dict.fromkeys(jobs, "deleted"), td.summary.jobs
        calls = _destructive(sim)
    assert max(calls.values()) == 1  # each kind at most once: no blind repeat
    assert not any(sim.violations.values())


def test_a_task_that_gains_an_order_after_the_plan_is_blocked_with_the_order(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        odd, *others = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        sim.drift(odd, "gain_order", after_reads=1)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = _destructive(sim)
    assert td.outcomes == {odd: "blocked", **dict.fromkeys(others, "deleted")}
    job = next(j for j in td.summary.jobs if j["job_id"] == odd)
    assert "yearly/monthly order" in job["reason"]
    assert calls[(odd, "terminate")] <= 1 and (odd, "delete") not in calls


def test_run_timeout_is_a_hard_budget_against_a_trickling_service(tmp_path: Path) -> None:
    """Every batch-status answer trickles (a byte every 200 ms): the run stops at its --timeout, records every
    task timed out, and ends within the budget plus a small margin (real time, one real trickling server)."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        sim.set_fault("batch-status", "trickle", times=None, byte_ms=200)
        started = time.monotonic()
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, timeout=3.0)
        elapsed = time.monotonic() - started
        sim.clear_faults()
    assert set(td.outcomes[j] for j in jobs) == {"timed_out"}
    assert all(j["reason"].startswith("run timeout (3s) passed") for j in td.summary.jobs)
    assert td.summary.exit_code == 3
    assert elapsed < 3.0 + 12.0, elapsed  # the plan's reads plus the budget plus a margin, never minutes


def test_the_timeout_also_bounds_planning_against_a_frozen_service(tmp_path: Path) -> None:
    """A service that accepts connections and never answers: the command ends near its --timeout, exit 1, and
    the error names the URL and the cause (not an empty "ReadTimeout: ")."""
    import json

    from tests.kit import PROJECT, TOKEN, cli

    with simulator(profile="fast") as (sim, url):
        add(sim, 3, status="INCRE_TRANSFER_STARTED")
        sim.set_fault("list", "freeze", times=None)
        env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
               "DRS_TEARDOWN_DB": sqlite_url(tmp_path)}
        started = time.monotonic()
        r = cli(["run", "--all", "--yes", "--timeout", "3", "--output", "json"], env)
        elapsed = time.monotonic() - started
        sim.clear_faults()
        assert sim.destructive_calls == []
    doc = json.loads(r.stdout)
    assert r.exit_code == doc["exit_code"] == 1, r.output
    print(doc["error"])
    assert url in doc["error"] and "no answer from" in doc["error"]
    assert elapsed < 3.0 + 10.0, elapsed
