"""The CLI contract (issue 18), run as a user would: exit codes, exactly one JSON document where asked, a message
naming the input, nothing sent (the simulator's counters), no secret in the output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.simulator import JobSpec
from orchestrator.store.repo import open_store
from tests.kit import PROJECT, TOKEN, add, cli, settings, simulator

ENV_BASE = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT}
FAST = ["--poll-interval", "0.05"]
JOB = "0a1b2c3d-0000-4000-8000-00000000abcd"


def env_for(url: str, db: str) -> dict[str, str]:
    return {**ENV_BASE, "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_DB": db}


ENV = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}


def cli_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own (one a crash point may kill)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=120)


def one_document(stdout: str) -> dict:  # type: ignore[type-arg]
    """stdout is exactly one JSON document (json.loads refuses trailing data)."""
    return json.loads(stdout)


def no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


USAGE_CASES = [
    (["run", "--al", "--output", "json"], "--al"),
    (["run", "--output", "json", "--all", "--batch-size", "0"], "--batch-size"),
    (["plan", "--jobs-file", "/nope", "--output", "json"], "/nope"),
    (["plan", "--all", "--project-id", PROJECT, "--project-id", "b" * 32, "--output", "json"], "--project-id"),
    (["plan", "--status", "pausingx", "--output", "json"], "PAUSING"),  # the valid values are listed
    (["plan", "--output", "json"], "nothing selected"),
    (["plan", JOB, "656gbd72-0000-4000-8000-000000000000", "--output", "json"], "argument 2"),
    (["--output", "json"], "--output"),
    (["run", "--all", "--yes", "--concurrency", "0", "--output", "json"], "--concurrency"),
    (["status", "--output", "json", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("args, needle", USAGE_CASES, ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_usage_errors_exit_1_with_one_document_and_nothing_sent(args: list[str], needle: str, sqlite_db: str) -> None:
    with simulator() as (sim, url):
        r = cli(args, env_for(url, sqlite_db))
        assert sim.requests == []
    assert r.exit_code == 1, r.output
    d = one_document(r.stdout)
    assert d["exit_code"] == 1 and needle in d["error"] and needle in r.stderr
    no_secret(r.stdout, r.stderr)


def test_text_mode_usage_error_prints_no_json(sqlite_db: str) -> None:
    r = cli(["run", "--all", "--output", "yaml"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "yaml" in r.stderr and r.stdout == ""


def test_a_bare_command_line_is_a_usage_error() -> None:
    r = cli([])
    assert r.exit_code == 1 and "Commands:" in r.stderr and "no command" in r.stderr


def test_a_jobs_file_that_is_a_directory_or_a_device_is_refused(tmp_path: Path, sqlite_db: str) -> None:
    with simulator() as (sim, url):
        for path, why in ((str(tmp_path), "directory"), ("/dev/zero", "regular file")):
            r = cli(["run", "--jobs-file", path, "--yes", "--output", "json"], env_for(url, sqlite_db))
            assert r.exit_code == 1 and path in r.stderr and why in r.stderr
            assert one_document(r.stdout)["exit_code"] == 1
        assert sim.requests == []


def test_jobs_file_caps_encoding_and_every_bad_line_at_once(tmp_path: Path, sqlite_db: str) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes((JOB + "\n").encode() * (8 * 1024 * 1024 // 37 + 10))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"{JOB}\n# caf\xe9\n".encode("latin-1"))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{JOB}\nnope\n{JOB.upper()}\n656gbd72-0000-4000-8000-000000000000\n\nzz-top # comment\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with simulator() as (sim, url):
        r = cli(["plan", "--jobs-file", str(big)], env_for(url, sqlite_db))
        assert r.exit_code == 1 and str(big) in r.stderr and "MiB" in r.stderr
        r = cli(["plan", "--jobs-file", "-"], env_for(url, sqlite_db), input=(JOB + "\n") * 240_000)
        assert r.exit_code == 1 and "stdin" in r.stderr and "MiB" in r.stderr
        r = cli(["plan", "--jobs-file", str(latin)], env_for(url, sqlite_db))
        assert r.exit_code == 1 and f"{latin} line 2" in r.stderr and "UTF-8" in r.stderr
        r = cli(["plan", "--jobs-file", str(bad), "bad-arg"], env_for(url, sqlite_db))
        assert r.exit_code == 1
        for where in ("argument 1", f"{bad} line 2", f"{bad} line 4", f"{bad} line 6"):
            assert where in r.stderr, where
        assert f"{bad} line 3" not in r.stderr  # an upper-case id is the same id, in lower case
        r = cli(["plan", "--jobs-file", str(empty)], env_for(url, sqlite_db))
        assert r.exit_code == 1 and str(empty) in r.stderr and "no job ids" in r.stderr
        assert sim.requests == []


def test_ticket_reason_and_config_file_are_capped(tmp_path: Path, sqlite_db: str) -> None:
    cfg = tmp_path / "huge.toml"
    cfg.write_text("# " + "x" * (1024 * 1024) + "\n")
    with simulator() as (sim, url):
        for args, needle in ((["--ticket", "T" * 256], "ticket"), (["--reason", "R" * 5000], "reason")):
            r = cli(["run", JOB, "--yes", *args, "--output", "json"], env_for(url, sqlite_db))
            assert r.exit_code == 1 and needle in one_document(r.stdout)["error"]
        r = cli(["--config", str(cfg), "plan", "--all"], env_for(url, sqlite_db))
        assert r.exit_code == 1 and str(cfg) in r.stderr and "KiB" in r.stderr
        assert sim.requests == []


def test_output_files_are_checked_before_any_call_and_dash_is_stdout(tmp_path: Path, sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        r = cli(["plan", "--all", "-o", "/nonexistent/p.json", "--output", "json"], env_for(url, sqlite_db))
        assert r.exit_code == 1 and "/nonexistent" in one_document(r.stdout)["error"]
        assert sim.requests == []
        r = cli(["plan", job, "-o", "-"], env_for(url, sqlite_db))
        assert r.exit_code == 0 and one_document(r.stdout)["items"][0]["job_id"] == job
        run = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
    run_id = one_document(run.stdout)["run_id"]
    assert run.exit_code == one_document(run.stdout)["exit_code"] == 0
    r = cli(["report", run_id, "--html", "/nonexistent/r.html", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "/nonexistent" in one_document(r.stdout)["error"]
    r = cli(["report", run_id, "--html", "-"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 0 and r.stdout.lstrip().lower().startswith("<!doctype html") and not Path("-").exists()
    r = cli(["report", run_id, "--html", str(tmp_path / "r.html"), "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 0 and one_document(r.stdout)["chain_ok"] is True


def test_results_on_stdout_progress_and_logs_on_stderr(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        p = cli(["plan", job], env_for(url, sqlite_db))
        assert p.exit_code == 0 and job in p.stdout and "plan hash" in p.stderr
        run = cli(["run", job, "--yes", *FAST], env_for(url, sqlite_db))
        assert run.exit_code == 0 and job in run.stdout and "consent" in run.stderr
    env = {"DRS_TEARDOWN_DB": sqlite_db}
    assert job in cli(["status", "--output", "text", _run_id(sqlite_db)], env).stdout
    v = cli(["verify"], env)
    assert v.exit_code == 0 and "ok run" in v.stdout
    a = cli(["audit", _run_id(sqlite_db), "--output", "json"], env)
    assert a.exit_code == 0 and one_document(a.stdout)["records"]


def _run_id(db: str) -> str:
    return one_document(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": db}).stdout)["runs"][0]["run_id"]


def test_verify_on_an_empty_store_is_not_ok(sqlite_db: str) -> None:
    r = cli(["verify", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    d = one_document(r.stdout)
    assert d["ok"] is False and "nothing to verify" in d["message"] and r.exit_code == d["exit_code"] != 0


def test_an_empty_match_says_so_and_records_no_run(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        sim.add_jobs(2, JobSpec(name="live-orders"))
        r = cli(["run", "--name", "legacy-*", "--yes", "--output", "json"], env_for(url, sqlite_db))
        t = cli(["plan", "--name", "legacy-*"], env_for(url, sqlite_db))
        assert sim.destructive_calls == []
    d = one_document(r.stdout)
    assert r.exit_code == 0 and d["selected"] == 0 and d["exit_code"] == 0
    assert f"nothing matched --name 'legacy-*' in project {PROJECT}" in d["message"]
    assert t.exit_code == 0 and "nothing matched --name 'legacy-*'" in t.stderr
    runs = one_document(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db}).stdout)["runs"]
    assert [r for r in runs if r["status"] != "finished"] == []
    assert runs == []  # no run recorded at all: the bare run row written before listing is gone again
    assert "planning and executing" not in r.stderr  # no run is named


def test_an_empty_match_from_a_runbook_records_no_run_either(sqlite_db: str) -> None:
    from orchestrator.selection import Selection
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Teardown

    with simulator() as (sim, url):
        sim.add_jobs(2, JobSpec(name="live-orders"))
        store = Store(sqlite_db)
        td = Teardown(settings(url, sqlite_db), ENV, selection=Selection(name_glob="legacy-*"), consent="runbook",
                      store=store)
        run_plan = asyncio.run(td.plan())
    assert run_plan.nothing_matched() and td.run_id is None
    assert store.runs() == [] and store.unfinished_runs() == []


def test_a_kill_while_listing_leaves_a_resumable_run_that_resume_completes(sqlite_db: str) -> None:
    """The run row is written before the first list call; its trail opens only once the selection is known, so
    a SIGKILL on the list call's answer leaves a bare run: shown interrupted, verifiable, and resumed."""
    with simulator() as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        env = env_for(url, sqlite_db)
        killed = cli_process(["run", "--all", "--yes", "--output", "json", *FAST],
                             {**env, "DRS_TEARDOWN_CRASH_AT": "after_send:list:1"})
        assert killed.returncode == -9 and sim.destructive_calls == []
        st = one_document(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db}).stdout)["runs"]
        assert [r["status"] for r in st] == ["interrupted"]
        v = cli(["verify", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
        assert v.exit_code == 0, v.output
        resumed = cli(["resume", "--output", "json", *FAST], env)
        d = one_document(resumed.stdout)
        assert resumed.exit_code == d["exit_code"] == 0, resumed.output
        assert d["counts"] == {"deleted": 3} and all(sim.status_of(j) in ("DELETED", None) for j in jobs)
    store = open_store(sqlite_db)
    triggers = [r.trigger for r in store.records(st[0]["run_id"])]
    assert triggers[:3] == ["run_recorded", "run_resumed", "run_started"]
    assert store.verify(st[0]["run_id"]).ok


def test_not_found_exit_codes_missing_ok_and_an_earlier_deletion(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        first = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert first.exit_code == 0
        with sim.world.lock:  # purged by the service: now "not found"
            del sim.world.jobs[job]
        again = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        stranger = "0a1b2c3d-0000-4000-8000-0000000000ff"
        strict = cli(["run", stranger, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        ok = cli(["run", stranger, "--yes", "--missing-ok", "--output", "json", *FAST], env_for(url, sqlite_db))
    d = one_document(again.stdout)
    assert again.exit_code == d["exit_code"] == 0, again.output
    assert one_document(first.stdout)["run_id"] in d["jobs"][0]["reason"]  # names the earlier run
    assert strict.exit_code == one_document(strict.stdout)["exit_code"] == 3
    assert ok.exit_code == one_document(ok.stdout)["exit_code"] == 0


def test_an_unexpected_error_ends_with_the_document_and_the_run_stays_resumable(
        sqlite_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.usecases import teardown as usecase

    real_run = usecase.Engine.run

    async def out_of_memory(self, **kw):  # type: ignore[no-untyped-def]
        raise MemoryError

    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        monkeypatch.setattr(usecase.Engine, "run", out_of_memory)
        r = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert r.exit_code == 1 and "MemoryError" in one_document(r.stdout)["error"]
        assert "Traceback" not in r.stderr
        monkeypatch.setattr(usecase.Engine, "run", real_run)
        st = one_document(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db}).stdout)
        assert st["runs"][0]["status"] == "interrupted"
        resumed = cli(["resume", "--output", "json"], env_for(url, sqlite_db))
        assert resumed.exit_code == one_document(resumed.stdout)["exit_code"] == 0, resumed.output
    nothing = cli(["resume", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert nothing.exit_code == 0 and "nothing to resume" in one_document(nothing.stdout)["message"]


def test_a_new_run_overlapping_an_unfinished_one_is_refused(sqlite_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.usecases import teardown as usecase

    async def stop_at_once(self, **kw):  # type: ignore[no-untyped-def]
        while self.feed is not None and not self.feed.done:  # killed once its plan is recorded, before acting
            await asyncio.sleep(0.01)
        raise KeyboardInterrupt

    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED"))
        monkeypatch.setattr(usecase.Engine, "run", stop_at_once)
        first = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert first.exit_code == 130
        monkeypatch.undo()
        second = cli(["run", job, "--yes", "--output", "json", *FAST], env_for(url, sqlite_db))
        assert sim.destructive_calls == []
    d = one_document(second.stdout)
    assert second.exit_code == d["exit_code"] == 2
    assert "drs-teardown resume" in d["error"] and job in d["error"]


def test_demo_exit_code_equals_its_document(tmp_path: Path) -> None:
    r = cli(["demo", "--jobs", "6", "--profile", "fast", "--poll-interval", "0.05", "--output", "json"], {},
            cwd=tmp_path)
    d = one_document(r.stdout)
    assert r.exit_code == d["exit_code"] and d["exit_code"] == (0 if d["demo_ok"] else 1)


def test_a_trailing_newline_in_the_endpoint_is_not_a_traceback(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        r = cli(["plan", job, "--output", "json"], {**env_for(url, sqlite_db), "DRS_TEARDOWN_ENDPOINT": url + "\n"})
    assert r.exit_code == 0, r.output


def test_no_warning_or_traceback_from_a_subprocess(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update(DRS_TEARDOWN_DB=f"sqlite:///{tmp_path / 'x.db'}", DRS_TEARDOWN_PROJECT_ID=PROJECT,
               DRS_TEARDOWN_ENDPOINT="http://127.0.0.1:9", DRS_TEARDOWN_AUTH_TOKEN=TOKEN, PYTHONWARNINGS="always")
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan", "--all", "--timeout", "2", "--output",
                           "json"], capture_output=True, text=True, env=env, timeout=120)
    d = one_document(proc.stdout)
    assert proc.returncode == d["exit_code"] != 0
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    no_secret(proc.stdout, proc.stderr)


def test_a_database_url_password_never_reaches_the_output() -> None:
    r = cli(["--db", "postgresql+psycopg://bob:hunter2-secret@127.0.0.1:1/x", "status", "--output", "json"])
    d = one_document(r.stdout)
    assert r.exit_code == d["exit_code"] != 0
    assert "hunter2-secret" not in r.stdout + r.stderr
