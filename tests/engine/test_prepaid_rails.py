"""--unsubscribe-prepaid through the CLI (issue 14): on plan as on run, the plan names each order, --max-targets
counts the yearly/monthly tasks, the consent records the billing action, a reviewed plan made with the flag is
not executed without it, BSS refusing the whole call (an HTTP error) blocks with BSS's code and message, and the
unsubscribe intent carries the order and resource ids."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from orchestrator.store.repo import Store
from tests.kit import PROJECT, TOKEN, add, cli, simulator, sqlite_url, teardown

ORDER = "CS2611011200ABCDE"


def _env(url: str, db: str, **extra: str) -> dict[str, str]:
    return {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
            "DRS_TEARDOWN_DB": db, **extra}


def test_plan_takes_the_flag_and_shows_each_order(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        plain = add(sim, 1, status="INCRE_TRANSFER_STARTED")[0]
        r = cli(["plan", "--all", "--unsubscribe-prepaid", "--output", "json"],
                _env(url, db, DRS_TEARDOWN_BSS_ENDPOINT=url))
        without = cli(["plan", "--all", "--output", "json"], _env(url, db))
        no_bss = cli(["plan", "--all", "--unsubscribe-prepaid", "--output", "json"], _env(url, db))
        assert sim.destructive_calls == [] and sim.bss_calls == []  # plan is read-only
    assert r.exit_code == 0, r.stdout + r.stderr
    items = {i["job_id"]: i for i in json.loads(r.stdout)["items"]}
    assert (items[job]["action"], items[job]["order_id"]) == ("unsubscribe_then_delete", ORDER)
    assert items[plain]["action"] == "stop_then_delete"
    assert {i["job_id"]: i["action"] for i in json.loads(without.stdout)["items"]}[job] == "block"
    assert no_bss.exit_code == 1 and "BSS endpoint" in json.loads(no_bss.stdout)["error"]


def test_max_targets_counts_the_yearly_monthly_tasks(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        add(sim, 2, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        r = cli(["run", "--all", "--yes", "--unsubscribe-prepaid", "--max-targets", "1", "--output", "json"],
                _env(url, sqlite_url(tmp_path), DRS_TEARDOWN_BSS_ENDPOINT=url))
        assert sim.destructive_calls == [] and sim.bss_calls == []
    assert r.exit_code == 2 and "--max-targets 1" in json.loads(r.stdout)["error"]


def test_the_consent_records_the_billing_action(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        r = cli(["run", "--all", "--yes", "--unsubscribe-prepaid", "--poll-interval", "0.05", "--output", "json"],
                _env(url, db, DRS_TEARDOWN_BSS_ENDPOINT=url))
    assert r.exit_code == 0, r.stdout + r.stderr
    store = Store(db)
    (run,) = store.runs()
    assert run.consent == "yes-flag+unsubscribe-prepaid"
    (started,) = [x for x in store.records(run.id) if x.trigger == "run_started"]
    assert "consent=yes-flag+unsubscribe-prepaid" in (started.detail or "")
    store.close()


def test_a_plan_reviewed_with_the_flag_is_not_executed_without_it(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    plan_file = tmp_path / "plan.json"
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        env = _env(url, db, DRS_TEARDOWN_BSS_ENDPOINT=url)
        assert cli(["plan", "--all", "--unsubscribe-prepaid", "-o", str(plan_file)], env).exit_code == 0
        refused = cli(["run", "--plan", str(plan_file), "--yes", "--output", "json"], env)
        assert sim.destructive_calls == [] and sim.bss_calls == []
        done = cli(["run", "--plan", str(plan_file), "--yes", "--unsubscribe-prepaid", "--poll-interval", "0.05",
                    "--output", "json"], env)
        assert sim.bss_counts()[ORDER]["unsubscribe"] == 1
    assert refused.exit_code == 2
    assert "planned with --unsubscribe-prepaid" in json.loads(refused.stdout)["error"]
    assert done.exit_code == 0 and json.loads(done.stdout)["counts"] == {"deleted": 1}
    assert job in done.stdout
    store = Store(db)
    (run,) = [r for r in store.runs() if r.exit_code == 0]
    assert run.consent == "plan-file+yes-flag+unsubscribe-prepaid"
    store.close()


def test_the_longest_billing_consent_fits_postgresql(pg_url: str, tmp_path: Path) -> None:
    """A reviewed plan, confirmed with --yes and the billing flag, records its whole consent on PostgreSQL (whose
    varchar length is enforced, unlike SQLite's)."""
    plan_file = tmp_path / "plan.json"
    with simulator(profile="fast") as (sim, url):
        add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        env = _env(url, pg_url, DRS_TEARDOWN_BSS_ENDPOINT=url)
        assert cli(["plan", "--all", "--unsubscribe-prepaid", "-o", str(plan_file)], env).exit_code == 0
        done = cli(["run", "--plan", str(plan_file), "--yes", "--unsubscribe-prepaid", "--poll-interval", "0.05",
                    "--output", "json"], env)
    assert done.exit_code == 0, done.stdout + done.stderr
    store = Store(pg_url)
    assert [r.consent for r in store.runs()] == ["plan-file+yes-flag+unsubscribe-prepaid"]
    assert [r.exit_code for r in store.runs()] == [0]
    store.close()


def test_bss_refusing_the_whole_call_blocks_with_its_code_and_message(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        sim.set_fault("bss-unsubscribe", "error_4xx", times=None, status=403, code="CBC.0151",
                      message="Access denied: no permission to unsubscribe")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, unsubscribe_prepaid=True,
                      bss_endpoint=url)
        calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        unsubscribes = [r for r in sim.requests if r.get("route") == "bss-unsubscribe"]
    assert td.outcomes == {job: "blocked"}
    (j,) = td.summary.jobs
    assert "BSS refused the unsubscribe" in j["reason"]
    assert "CBC.0151" in j["reason"] and "no permission to unsubscribe" in j["reason"]
    assert calls == Counter()  # nothing stopped, nothing deleted
    assert len(unsubscribes) == 1  # a refusal is not retried
    assert td.summary.exit_code == 3


def test_the_unsubscribe_intent_names_the_order_and_its_resources(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", period_order_id=ORDER)
        resource = sim.jobs[job]["resource_id"]
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, unsubscribe_prepaid=True,
                      bss_endpoint=url)
    (intent,) = [r for r in td.store.records(td.run_id) if r.trigger == "unsubscribe"]
    assert json.loads(intent.values or "null") == {"order_id": ORDER, "resource_ids": [resource]}
    assert td.store.verify(td.run_id).ok
