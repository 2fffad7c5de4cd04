"""The CLI through click's runner against the simulator over loopback: contracts, exit codes, safety rails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.simulator import JobSpec
from orchestrator.store.db import HEAD_REVISION
from tests.kit import PROJECT, TOKEN, cli, simulator

ENV_BASE = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT}
FAST = ["--poll-interval", "0.05"]


def env_for(url: str, db: str) -> dict[str, str]:
    return {**ENV_BASE, "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_DB": db}


def doc(result) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(result.stdout)


def test_run_all_mixed_world_matches_the_contract(sqlite_db: str) -> None:
    with simulator(jobs=40, seed=5) as (sim, url):
        result = cli(["run", "--all", "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        violations = dict(sim.violations)
        touched = {c["job_id"] for c in sim.destructive_calls}
    d = doc(result)
    assert set(d) == {"run_id", "exit_code", "counts", "jobs", "left_behind"}
    assert d["exit_code"] == result.exit_code
    for job in d["jobs"]:
        assert set(job) >= {"job_id", "outcome", "local_state", "remote_status", "reason"}
        assert job["outcome"] in {"deleted", "skipped", "blocked", "failed", "timed_out", "pending"}
    blocked = [j for j in d["jobs"] if j["outcome"] == "blocked"]
    assert blocked, "the seeded world has yearly/monthly tasks"
    assert all("yearly/monthly" in j["reason"] or "dual-active" in j["reason"] for j in blocked)
    assert not touched & {j["job_id"] for j in blocked}, "a blocked task received a destructive call"
    assert {j["outcome"] for j in d["jobs"]} <= {"deleted", "blocked", "skipped"}
    assert result.exit_code == 3  # finished, but some tasks are blocked
    assert violations == {}


def test_all_deleted_exits_zero_and_verify_passes(sqlite_db: str, tmp_path: Path) -> None:
    with simulator() as (sim, url):
        ids = sim.add_jobs(5, JobSpec(status="INCRE_TRANSFER_STARTED")) + sim.add_jobs(
            2, JobSpec(status="RELEASE_RESOURCE_COMPLETE"))
        result = cli(["run", *ids, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert result.exit_code == 0, result.output
        assert doc(result)["counts"] == {"deleted": 7}
        assert all(sim.status_of(i) in ("DELETED", None) for i in ids)
        assert dict(sim.violations) == {}
    run_id = doc(result)["run_id"]
    v = cli(["verify", run_id, "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert v.exit_code == 0 and doc(v)["ok"] is True
    st = cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert doc(st)["runs"][0]["run_id"] == run_id and doc(st)["runs"][0]["status"] == "finished"
    one = cli(["status", run_id[:8], "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert doc(one)["counts"] == {"deleted": 7}
    for fmt in ("table", "json", "csv"):
        a = cli(["audit", run_id, "--format", fmt], {"DRS_TEARDOWN_DB": sqlite_db})
        assert a.exit_code == 0 and a.stdout
    html = tmp_path / "r.html"
    r = cli(["report", run_id, "--html", str(html)], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 0 and ids[0] in html.read_text()


def test_malformed_id_is_refused_before_any_call(sqlite_db: str, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    with simulator() as (sim, url):
        good = sim.add_job(JobSpec())
        jobs.write_text(f"# decommission list\n{good}\n\nnot-a-job-id  # typo\n")
        result = cli(["run", "--jobs-file", str(jobs), "--yes"], env_for(url, sqlite_db))
        assert result.exit_code == 1
        assert f"--jobs-file {jobs} line 4" in result.stderr and "not-a-job-id" in result.stderr
        assert sim.requests == []
        arg = cli(["plan", good, "bad-id"], env_for(url, sqlite_db))
        assert arg.exit_code == 1 and "argument 2" in arg.stderr and sim.requests == []


def test_jobs_file_from_stdin_and_unknown_id_is_skipped(sqlite_db: str) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    with simulator() as (sim, url):
        a, b = sim.add_jobs(2, JobSpec(status="CREATE_FAILED"))
        result = cli(["run", "--jobs-file", "-", "--yes", "--missing-ok", "--output", "json", *FAST],
                     env_for(url, sqlite_db), input=f"{a}\n# comment\n{b}\n{unknown}\n")
        assert result.exit_code == 0, result.output
        outcomes = {j["job_id"]: (j["outcome"], j["reason"]) for j in doc(result)["jobs"]}
        assert outcomes[a][0] == outcomes[b][0] == "deleted"
        assert outcomes[unknown][0] == "skipped" and "not found" in outcomes[unknown][1]
        assert sim.violations.get("unknown_job_action", 0) == 0
        # Without --missing-ok a mistyped id fails the run (exit 3); upper case is the same id.
        c = sim.add_job(JobSpec(status="CREATE_FAILED"))
        strict = cli(["run", c.upper(), unknown, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert strict.exit_code == doc(strict)["exit_code"] == 3, strict.output
        assert {j["job_id"]: j["outcome"] for j in doc(strict)["jobs"]} == {c: "deleted", unknown: "skipped"}


def test_dry_run_without_yes_sends_nothing(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec())
        result = cli(["run", job, "--output", "json"], env_for(url, sqlite_db))
        assert result.exit_code == 2
        d = doc(result)
        assert d["dry_run"] is True and d["items"][0]["action"] == "stop_then_delete"
        assert sim.destructive_calls == []


def test_max_targets_refuses_and_sends_nothing(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        ids = sim.add_jobs(3, JobSpec())
        result = cli(["run", *ids, "--yes", "--max-targets", "2"], env_for(url, sqlite_db))
        assert result.exit_code == 2 and "--max-targets 2" in result.stderr
        assert sim.destructive_calls == []


def test_reviewed_plan_runs_and_drift_is_refused(sqlite_db: str, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    with simulator() as (sim, url):
        ids = sim.add_jobs(3, JobSpec(status="INCRE_TRANSFER_STARTED"))
        p = cli(["plan", *ids, "-o", str(plan_file)], env_for(url, sqlite_db))
        assert p.exit_code == 0 and plan_file.exists()
        saved = json.loads(plan_file.read_text())
        assert saved["hash"] and [i["action"] for i in saved["items"]] == ["stop_then_delete"] * 3
        # Drift: someone else stops one task, so its action changes to delete.
        with sim.world.lock:
            sim.world.jobs[ids[0]].status = "RELEASE_RESOURCE_COMPLETE"
        d = cli(["run", "--plan", str(plan_file), "--yes"], env_for(url, sqlite_db))
        assert d.exit_code == 2 and "drift" in d.stderr and ids[0] in d.stderr
        assert sim.destructive_calls == []
        # A plan edited after review is refused.
        tampered = tmp_path / "tampered.json"
        saved["items"][1]["action"] = "delete"
        tampered.write_text(json.dumps(saved))
        t = cli(["run", "--plan", str(tampered), "--yes"], env_for(url, sqlite_db))
        assert t.exit_code == 1 and "hash" in t.stderr
        # Re-plan and run the reviewed plan.
        cli(["plan", *ids, "-o", str(plan_file)], env_for(url, sqlite_db))
        ok = cli(["run", "--plan", str(plan_file), "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert ok.exit_code == 0, ok.output
        assert doc(ok)["counts"] == {"deleted": 3}


def test_plan_with_selection_and_plan_file_is_a_usage_error(sqlite_db: str, tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text("{}")
    with simulator() as (sim, url):
        r = cli(["run", "--plan", str(f), "--all", "--yes"], env_for(url, sqlite_db))
        assert sim.requests == []
        assert r.exit_code == 1 and "--plan" in r.stderr


def test_filters_select_through_the_list_api(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        keep = sim.add_jobs(2, JobSpec(name="legacy-orders", db_use_type="migration", status="PAUSING"))
        sim.add_jobs(2, JobSpec(name="live-orders", db_use_type="migration", status="PAUSING"))
        sim.add_jobs(1, JobSpec(name="legacy-sync", db_use_type="sync", status="PAUSING"))
        r = cli(["plan", "--name", "legacy-*", "--db-use-type", "migration", "--output", "json"],
                env_for(url, sqlite_db))
        assert r.exit_code == 0, r.output
        assert sorted(i["job_id"] for i in doc(r)["items"]) == sorted(keep)
        s = cli(["plan", "--all", "--status", "PAUSING", "--output", "json"], env_for(url, sqlite_db))
        assert len(doc(s)["items"]) == 5
        bad = cli(["plan", "--status", "RUNNING"], env_for(url, sqlite_db))
        assert bad.exit_code == 1 and "--status 'RUNNING'" in bad.stderr


def test_dual_active_parent_carries_children_and_a_child_alone_is_blocked(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        parent = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", db_use_type="cloudDataGuard",
                                     engine_type="cloudDataGuard-mysql", multi_write=True, children=2))
        child = sim.jobs[parent]["child_ids"][0]
        alone = cli(["run", child, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert alone.exit_code == 3
        (job,) = doc(alone)["jobs"]
        assert job["outcome"] == "blocked" and parent in job["reason"]
        both = cli(["run", parent, child, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        outcomes = {j["job_id"]: j["outcome"] for j in doc(both)["jobs"]}
        # Both children go with the parent (issue 11): carried by it, skipped, and checked gone at the end.
        assert outcomes == {parent: "deleted", **dict.fromkeys(sim.jobs[parent]["child_ids"], "skipped")}
        assert doc(both)["left_behind"] == [] and both.exit_code == 0
        assert sim.violations.get("child_id", 0) == 0


def test_yearly_monthly_is_blocked_until_unsubscribed(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", period_order_id="CS0123456789"))
        first = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert first.exit_code == 3 and "unsubscribe" in doc(first)["jobs"][0]["reason"]
        assert sim.destructive_calls == []
        sim.unsubscribe(job)
        again = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert again.exit_code == 0, again.output
        assert doc(again)["counts"] == {"deleted": 1}
        assert dict(sim.violations) == {}


def test_demo_runs_in_the_current_folder(tmp_path: Path) -> None:
    r = cli(["demo", "--profile", "fast", "--poll-interval", "0.05", "--output", "json"], {}, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    d = doc(r)
    assert d["demo_ok"] is True and d["problems"] == [] and d["simulator_violations"] == {}
    assert (tmp_path / "drs-teardown.db").exists()
    assert os.stat(tmp_path / "drs-teardown.db").st_mode & 0o077 == 0


def test_db_upgrade_and_help(sqlite_db: str) -> None:
    r = cli(["--db", sqlite_db, "db", "upgrade"])
    assert r.exit_code == 0 and f"revision {HEAD_REVISION}" in (r.stdout + r.stderr)
    h = cli(["--help"])
    for command in ("demo", "plan", "run", "resume", "worker", "status", "audit", "verify", "report",
                    "simulator", "db", "completion"):
        assert command in h.stdout


def test_worker_on_sqlite_is_refused(sqlite_db: str) -> None:
    r = cli(["--db", sqlite_db, "worker"])
    assert r.exit_code == 1 and "PostgreSQL" in r.stderr


def test_resume_with_nothing_to_resume(sqlite_db: str) -> None:
    r = cli(["--db", sqlite_db, "resume"])
    assert r.exit_code == 0 and "nothing to resume" in r.stderr
    unknown = cli(["--db", sqlite_db, "resume", "feedface"])
    assert unknown.exit_code == 1 and "feedface" in unknown.stderr


@pytest.mark.parametrize("args, needle", [
    (["--token", "abc", "plan", "--all"], "--token"),
    (["plan", "--all", "--iam-password=abc"], "--iam-password"),
    (["plan", "--all", "DRS_TEARDOWN_IAM_PASSWORD=abc"], "DRS_TEARDOWN_IAM_PASSWORD"),
])
def test_secrets_on_the_command_line_are_refused(args: list[str], needle: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("DRS_TEARDOWN")})
    assert proc.returncode == 1
    assert needle in proc.stderr and "abc" not in proc.stderr + proc.stdout
    assert "[auth] table" in proc.stderr  # the advice survives rendering


def test_the_simulator_accepts_its_test_token_on_the_command_line() -> None:
    """`simulator serve --token T` names a token the simulator accepts; it is not one of our secrets."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "simulator", "serve", "--token", "t-123"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("listening on http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_plain_http_to_a_remote_endpoint_is_refused(sqlite_db: str) -> None:
    r = cli(["plan", "--all"], {**ENV_BASE, "DRS_TEARDOWN_ENDPOINT": "http://drs.example.com",
                                "DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "http://drs.example.com" in r.stderr and "--insecure-http" in r.stderr


def test_no_credentials_is_a_clear_error(sqlite_db: str) -> None:
    r = cli(["plan", "--all"], {"DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": "http://127.0.0.1:9",
                                "DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "DRS_TEARDOWN_AUTH_TOKEN" in r.stderr


def test_world_readable_config_with_a_secret_is_refused(tmp_path: Path, sqlite_db: str) -> None:
    cfg = tmp_path / "drs-teardown.toml"
    cfg.write_text('[auth]\ntoken = "sekrit-token-value"\n')
    cfg.chmod(0o644)
    r = cli(["--config", str(cfg), "plan", "--all"], {"DRS_TEARDOWN_PROJECT_ID": PROJECT,
                                                        "DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and str(cfg) in r.stderr and "chmod 600" in r.stderr
    assert "sekrit-token-value" not in r.output


def test_config_file_precedence(tmp_path: Path, sqlite_db: str) -> None:
    """flags > environment > config file > defaults."""
    from orchestrator.config import load_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text('[drs]\nproject_id = "fromfile"\nregion = "cn-north-4"\n[run]\nbatch_size = 50\n'
                   'poll_interval = 9\n')
    s = load_settings(str(cfg), {"DRS_TEARDOWN_PROJECT_ID": "fromenv"}, {"poll_interval": 1.5})
    assert (s.project_id, s.region, s.batch_size, s.poll_interval) == ("fromenv", "cn-north-4", 50, 1.5)
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nbatchsize = 5\n")
    r = cli(["--config", str(bad), "status"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "batchsize" in r.stderr


def test_verify_expect_head(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        run = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
    run_id = doc(run)["run_id"]
    v = doc(cli(["verify", run_id, "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db}))
    head = v["runs"][0]["head_hash"]
    ok = cli(["verify", run_id, "--expect-head", head], {"DRS_TEARDOWN_DB": sqlite_db})
    assert ok.exit_code == 0 and head in ok.stdout  # verdicts are results: stdout
    bad = cli(["verify", run_id, "--expect-head", "0" * 64], {"DRS_TEARDOWN_DB": sqlite_db})
    assert bad.exit_code == 4 and "HEAD MISMATCH" in bad.stdout
    usage = cli(["verify", "--expect-head", head], {"DRS_TEARDOWN_DB": sqlite_db})
    assert usage.exit_code == 1
