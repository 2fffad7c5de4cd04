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
    """A service that accepts connections and never answers: the command ends near its --timeout, exit 3 (the
    timeout, not an unexpected error: it was exit 1), the error names the URL and the cause (not an empty
    "ReadTimeout: "), and the run is resumable; `resume` gets a fresh budget that bounds its planning too (it
    was unbounded: minutes)."""
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
        assert r.exit_code == doc["exit_code"] == 3, r.output
        assert url in doc["error"] and "no answer from" in doc["error"]
        assert doc["error"].startswith("run timeout (3s) passed while planning: list: ")
        assert f"drs-teardown resume {doc['run_id']}" in doc["error"]
        assert elapsed < 3.0 + 10.0, elapsed
        sim.set_fault("list", "freeze", times=None)
        started = time.monotonic()
        again = cli(["resume", "--timeout", "3", "--output", "json"], env)
        elapsed = time.monotonic() - started
        sim.clear_faults()
        resumed = json.loads(again.stdout)
        assert again.exit_code == resumed["exit_code"] == 3 and resumed["run_id"] == doc["run_id"], again.output
        assert elapsed < 3.0 + 10.0, elapsed
        finished = cli(["resume", "--timeout", "60", "--poll-interval", "0.05", "--output", "json"], env)  # it answers
        assert sim.destructive_calls and not any(sim.violations.values())
    assert finished.exit_code == 0, finished.output
    assert json.loads(finished.stdout)["counts"] == {"deleted": 3}


def test_an_order_gained_during_the_release_blocks_after_one_refused_delete(tmp_path: Path) -> None:
    """150 running tasks gain a yearly/monthly order right after the first poll that follows their stop: each
    delete is refused once, the detail read that follows shows the order, and the task is blocked with the order
    as its reason and the note that this run stopped it (it was failed after four deletes, each a violation)."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 150, status="INCRE_TRANSFER_STARTED")
        for j in jobs:
            sim.drift(j, "gain_order", after_reads=3)  # list, the plan's detail read, the first poll
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = _destructive(sim)
        violations = sim.violations
    assert td.outcomes == dict.fromkeys(jobs, "blocked")
    for job in td.summary.jobs:
        assert job["reason"].startswith("yearly/monthly order CS"), job
        assert job["reason"].endswith("stopped by this run, not deleted"), job
    assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] <= 1 for j in jobs), calls
    assert not any(violations.values())  # the one refused delete each: the order came after the detail read
    assert td.summary.exit_code == 3


@pytest.mark.parametrize(("change", "start", "outcome", "most"), [
    ("restart", "RELEASE_RESOURCE_COMPLETE", "deleted", {"delete": 2, "terminate": 1}),
    ("deletable", "INCRE_TRANSFER_STARTED", "deleted", {"terminate": 1, "delete": 1}),
    ("gain_order", "INCRE_TRANSFER_STARTED", "blocked", {"terminate": 1}),
])
def test_drift_right_after_the_plans_reading_is_read_again_never_repeated(change: str, start: str, outcome: str,
                                                                        most: dict[str, int],
                                                                        tmp_path: Path) -> None:
    """The status changes right after the plan's detail read (150 tasks), so the first action goes out on a
    reading that is already wrong and is refused: the refusal is followed by a fresh detail read and a decision
    on that (a restarted task is stopped, then deleted; a now-deletable one deleted; one with an order blocked,
    the order named), never the same action again on the same reading."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 150, status=start, db_use_type="sync" if change == "gain_order" else "migration")
        for j in jobs:
            sim.drift(j, change, after_reads=2)  # after the list and the plan's detail read
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = _destructive(sim)
        assert len(sim.drift_refusals) == len(jobs)  # the drift did fall between the plan and the action
        assert not any(sim.violations.values()), sim.violation_log
    assert td.outcomes == dict.fromkeys(jobs, outcome), td.summary.jobs[:3]
    for (job, kind), n in calls.items():
        assert n <= most.get(kind, 0), (job, kind, n)
    if change == "gain_order":
        assert all("yearly/monthly order CS" in j["reason"] for j in td.summary.jobs)


def test_a_reading_older_than_a_poll_interval_is_refreshed_before_the_first_action(tmp_path: Path) -> None:
    """The plan read the tasks deletable; they run again before the run acts, and the reading has aged past the
    freshness bound (max(2 s, --poll-interval)): it is read again first, so no delete reaches a running task."""
    import asyncio

    from orchestrator import usecases
    from orchestrator.selection import Selection
    from orchestrator.store.repo import Store
    from tests.kit import TOKEN, settings

    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 5, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")

        async def late() -> Teardown:
            s = settings(url, sqlite_url(tmp_path), poll_interval=0.05)
            td = usecases.Teardown(s, {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}, selection=Selection(all=True),
                                   consent="test", store=Store(s.db))
            await td.plan()
            for j in jobs:
                sim.drift(j, "restart")
            await asyncio.sleep(2.2)  # the plan's reading ages past max(2 s, poll interval)
            run_id = td.record()
            summary = await td.execute()
            return Teardown(td.store, run_id, summary, None, sim, {j["job_id"]: j["outcome"] for j in summary.jobs})

        td = asyncio.run(late())
        refused = [c for c in sim.destructive_calls if c["result"] != "success"]
        assert not any(sim.violations.values()), sim.violation_log
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert refused == []  # the stale deletable reading never led to a delete
    assert _destructive(sim) == Counter({**{(j, "terminate"): 1 for j in jobs}, **{(j, "delete"): 1 for j in jobs}})


@pytest.mark.parametrize("shape", ["failing", "all"])
def test_a_task_purged_mid_release_does_not_end_the_others_of_its_chunk(shape: str, tmp_path: Path) -> None:
    """150 running tasks; one is deleted by someone else while it releases, and batch-status answers its chunk
    with a 400 whose results list only that id (or every id): the other 99 of the chunk are read again on their
    own and deleted (they were blocked: "batch-status did not return it"), the purged one ends skipped."""
    with simulator(profile="fast") as (sim, url):
        sim.configure(batch_status_unknown_http_status=400, unknown_id_results=shape)
        gone, *jobs = add(sim, 150, status="INCRE_TRANSFER_STARTED", db_use_type="migration")
        sim.drift(gone, "purge", after_reads=3)  # list, the plan's detail read, the first poll after the stop
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = _destructive(sim)
        assert not any(sim.violations.values()), sim.violation_log
        assert any(r["route"] == "batch-status" and r["status"] == 400 for r in sim.requests)
    assert td.outcomes == {gone: "skipped", **dict.fromkeys(jobs, "deleted")}, [
        (j["job_id"][:8], j["outcome"], j["reason"]) for j in td.summary.jobs if j["outcome"] != "deleted"]
    assert max(calls.values()) == 1
    assert (gone, "delete") not in calls


@pytest.mark.parametrize("route", ["list", "batch-detail"])
@pytest.mark.parametrize("fault", ["not_json", "truncated", "short_read", "results_null", "array", "missing_ids"])
def test_one_bad_plan_read_never_ends_a_task(route: str, fault: str, tmp_path: Path) -> None:
    """150 running tasks; one list or batch-detail answer of the plan is malformed or partial: it is read again
    and every task is deleted (a list page that left a row out asked for a page past the last: exit 1)."""
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 150, status="INCRE_TRANSFER_STARTED", db_use_type="migration")  # the first type listed
        sim.set_fault(route, fault, times=1)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        _converged(td, sim, jobs)
        assert sim.faults_served[f"{route}:{fault}"] == 1
