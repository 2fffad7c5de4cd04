"""Yearly/monthly tasks by explicit opt-in (issue 14): --unsubscribe-prepaid unsubscribes each order once through
BSS, waits for the release without terminate, then deletes; refusals block with BSS's reason; a crash between the
unsubscribe's intent and its answer is reconciled by reading, without a second unsubscribe; without the flag
nothing changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from orchestrator.store.repo import Store
from tests.kit import PROJECT, TOKEN, add, cli, simulator, sqlite_url, teardown

ORDER = "CS2611011200ABCDE"


def _calls(sim: object) -> Counter[tuple[str, str]]:
    return Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)  # type: ignore[attr-defined]


def test_a_mixed_run_deletes_prepaid_tasks_with_one_unsubscribe_and_no_terminate(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        prepaid = [add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=f"{ORDER}{i}")[0] for i in range(2)]
        plain = add(sim, 2, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, unsubscribe_prepaid=True,
                      bss_endpoint=url)
        calls, bss = _calls(sim), sim.bss_counts()
        assert not any(sim.violations.values()), sim.violation_log
    assert td.outcomes == dict.fromkeys(prepaid + plain, "deleted")
    assert {i.job_id: i.action.value for i in td.plan.items if i.job_id in prepaid} == dict.fromkeys(
        prepaid, "unsubscribe_then_delete")
    for i, job in enumerate(prepaid):
        assert (job, "terminate") not in calls and (job, "force_terminate") not in calls
        assert calls[(job, "delete")] == 1
        assert bss[f"{ORDER}{i}"]["unsubscribe"] == 1
    records = td.store.records(td.run_id)
    intents = [r for r in records if r.trigger == "unsubscribe"]
    assert {r.job_id for r in intents} == set(prepaid)
    assert all("billing action" in (r.detail or "") for r in intents)
    assert td.store.verify(td.run_id).ok


def test_a_refused_unsubscribe_blocks_with_bss_reason_and_nothing_is_deleted(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        sim.refuse_unsubscribe(job, code="CBC.30000054", message="order frozen", times=5)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, unsubscribe_prepaid=True,
                      bss_endpoint=url)
        calls = _calls(sim)
    assert td.outcomes == {job: "blocked"}
    (j,) = td.summary.jobs
    assert "BSS refused the unsubscribe" in j["reason"] and "CBC.30000054" in j["reason"]
    assert calls == Counter()
    assert td.summary.exit_code == 3


def test_without_the_flag_prepaid_tasks_are_blocked_and_untouched(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, bss_endpoint=url)
        assert sim.destructive_calls == [] and sim.bss_calls == []
    assert td.outcomes == {job: "blocked"} and "unsubscribe" in td.summary.jobs[0]["reason"]


def test_the_flag_without_a_bss_endpoint_is_refused_before_any_call(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
               "DRS_TEARDOWN_DB": sqlite_url(tmp_path)}
        r = cli(["run", "--all", "--yes", "--unsubscribe-prepaid", "--output", "json"], env)
        assert sim.requests == []
    assert r.exit_code == 1 and "BSS endpoint" in json.loads(r.stdout)["error"]


def test_a_crash_between_the_unsubscribe_intent_and_its_answer_is_reconciled_without_a_second_one(
        tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
        env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                    "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_BSS_ENDPOINT": url})
        crashed = subprocess.run(
            [sys.executable, "-m", "orchestrator", "--db", db, "run", "--all", "--yes", "--unsubscribe-prepaid",
             "--poll-interval", "0.05", "--output", "json"], env={**env, "DRS_TEARDOWN_CRASH_AT":
                                                                  "after_send:bss-unsubscribe:1"},
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        store = Store(db)
        (run,) = store.runs()
        (task,) = store.tasks(run.id)
        assert task.state.value == "unsubscribing"  # the intent was committed before the request
        resumed = subprocess.run([sys.executable, "-m", "orchestrator", "--db", db, "resume", "--output", "json"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert json.loads(resumed.stdout)["counts"] == {"deleted": 1}
        assert sim.bss_counts()[ORDER]["unsubscribe"] == 1  # reconciled by reading BSS, never re-sent
        assert (job, "terminate") not in _calls(sim)
        assert not any(sim.violations.values()), sim.violation_log
        store.close()
