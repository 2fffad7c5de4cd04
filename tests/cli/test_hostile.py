"""Hostile input and hard limits (issue 18), each case run as a user would — a subprocess of the installed CLI or
click's runner — against the simulator over loopback: the exit code, exactly one JSON document where asked, a
message naming the input, nothing sent (the simulator's counters) and no secret anywhere in the output.

The CLI contract's other cases (click's usage errors, the jobs file's caps and encoding, output files, streams,
`demo`, an unexpected error) are in tests/cli/test_contract.py; this module holds the rest of the issue's list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from orchestrator.simulator import JobSpec, Simulator
from tests.kit import PROJECT, TOKEN, cli, simulator

ROOT = Path(__file__).resolve().parents[2]
JOB = "0a1b2c3d-0000-4000-8000-00000000abcd"
FAST = ["--poll-interval", "0.05"]
PG_SECRET = "hunter2-secret"


def user_env(url: str | None, db: str, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess: no drs-teardown settings but the ones given, warnings shown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update(DRS_TEARDOWN_DB=db, DRS_TEARDOWN_PROJECT_ID=PROJECT, PYTHONWARNINGS="always", **extra)
    if url is not None:
        env.update(DRS_TEARDOWN_ENDPOINT=url)
        env.setdefault("DRS_TEARDOWN_AUTH_TOKEN", TOKEN)
    return env


def drs(args: list[str], env: dict[str, str], *, stdin: object = subprocess.DEVNULL, cwd: Path | None = None,
        preexec: object = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env,
                          stdin=stdin, cwd=cwd, timeout=180, preexec_fn=preexec)  # type: ignore[arg-type]


def clean(proc: subprocess.CompletedProcess[str] | object, *secrets: str) -> None:
    """No traceback, no Python warning, no secret in either stream."""
    out, err = proc.stdout, proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err and "Warning" not in err and "never retrieved" not in err, err[-3000:]
    for secret in (TOKEN, *secrets):
        assert secret not in out and secret not in err


def document(proc: subprocess.CompletedProcess[str] | object) -> dict:  # type: ignore[type-arg]
    """Exactly one JSON document on stdout, whose exit code is the process's."""
    doc = json.loads(proc.stdout)  # type: ignore[attr-defined]
    code = proc.returncode if isinstance(proc, subprocess.CompletedProcess) else proc.exit_code  # type: ignore[attr-defined]
    assert doc["exit_code"] == code, (doc, code)
    return doc  # type: ignore[no-any-return]


# -- a huge answer, under an address-space cap ---------------------------------------------------------------

CAPPED_CHILD = textwrap.dedent('''
    import atexit, resource, sys
    limit_mib, mode, peak_file, *args = sys.argv[1:]
    if int(limit_mib):
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_mib) << 20, resource.getrlimit(resource.RLIMIT_AS)[1]))
    if mode == "uncapped":  # what the client did before issue 18: read the whole body
        from orchestrator.drs import reading
        real = reading.read_capped
        reading.read_capped = lambda response, *, api, url, limit: real(response, api=api, url=url, limit=1 << 40)
    def peak():
        with open("/proc/self/status") as fh:
            vm = [line.split()[1] for line in fh if line.startswith("VmPeak:")][0]
        with open(peak_file, "w") as out:
            out.write(vm)
    atexit.register(peak)
    from orchestrator.cli import entry
    sys.argv = ["drs-teardown", *args]
    entry()
''')


def _capped_run(sim: Simulator, url: str, db: str, tmp_path: Path, limit_mib: int, mode: str = "capped",
                ) -> tuple[subprocess.CompletedProcess[str], int]:
    job = sim.add_job(JobSpec(status="CREATE_FAILED"))
    peak = tmp_path / f"peak-{limit_mib}-{mode}"
    env = user_env(url, db, MALLOC_ARENA_MAX="2")  # threads' malloc arenas would reserve 64 MiB of address each
    proc = subprocess.run([sys.executable, "-c", CAPPED_CHILD, str(limit_mib), mode, str(peak), "run", job, "--yes",
                           "--output", "json", *FAST], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    return proc, int(peak.read_text()) >> 10 if peak.exists() else 0


def test_a_200_mib_and_a_1_gib_status_body_end_a_run_normally_in_bounded_memory(
        sqlite_db: str, tmp_path: Path) -> None:
    """The same `run` three times: with well-behaved answers (its peak address space is the baseline), then with
    a 200 MiB and a 1 GiB batch-status answer under a cap of that baseline + 96 MiB. The answers are cut at
    16 MiB, read again as malformed, and the run ends as it would have."""
    with simulator() as (sim, url):
        normal, baseline = _capped_run(sim, url, sqlite_db, tmp_path, 0)
        assert normal.returncode == 0 and baseline > 0, normal.stderr[-2000:]
        limit = baseline + 96
        for mib in (200, 1024):
            sim.set_fault("batch-status", "huge", times=1, mib=mib)
            proc, _ = _capped_run(sim, url, sqlite_db, tmp_path, limit)
            assert proc.returncode == 0, (mib, proc.stdout[-1000:], proc.stderr[-3000:])
            assert document(proc)["counts"] == {"deleted": 1}
            assert "MemoryError" not in proc.stderr
            clean(proc)
        assert sim.log("faults_served").get("batch-status:huge") == 2, sim.log("faults_served")
        # The cap is what holds it: reading the whole body dies under the same limit (so this test can fail).
        sim.set_fault("batch-status", "huge", times=1, mib=200)
        uncapped, _ = _capped_run(sim, url, sqlite_db, tmp_path, limit, "uncapped")
        assert uncapped.returncode != 0 and "MemoryError" in uncapped.stdout + uncapped.stderr


# -- jobs files that never end, tickets that are too long ---------------------------------------------------------

def test_dev_zero_as_a_jobs_file_or_as_stdin_is_refused_at_once(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}")
        named = drs(["run", "--jobs-file", "/dev/zero", "--yes", "--output", "json"], env)
        with open("/dev/zero", "rb") as zero:
            piped = drs(["run", "--jobs-file", "-", "--yes", "--output", "json"], env, stdin=zero)
        assert sim.requests == []
    assert named.returncode == 1 and "/dev/zero" in document(named)["error"] and "regular file" in named.stderr
    assert piped.returncode == 1 and "stdin" in document(piped)["error"] and "8 MiB" in piped.stderr
    clean(named)
    clean(piped)


def test_invalid_utf8_in_a_jobs_file_names_the_line(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(f"# ids\n{JOB}\n\xff\xfe-not-text\n".encode("latin-1"))
    with simulator() as (sim, url):
        proc = drs(["plan", "--jobs-file", str(ids), "--output", "json"],
                   user_env(url, f"sqlite:///{tmp_path / 'x.db'}"))
        assert sim.requests == []
    assert proc.returncode == 1 and f"{ids} line 3: not UTF-8" in document(proc)["error"]
    clean(proc)


@pytest.mark.parametrize("option, size, needle", [("--ticket", 10 << 20, "ticket"), ("--ticket", 1 << 30, "ticket"),
                                                  ("--reason", 10 << 20, "reason")])
def test_a_huge_ticket_or_reason_is_refused_before_anything_is_read(option: str, size: int, needle: str,
                                                                      sqlite_db: str) -> None:
    """Through click's runner (argv of a real process holds at most 128 KiB per argument): 10 MiB and 1 GiB."""
    with simulator() as (sim, url):
        sim.add_job(JobSpec(status="CREATE_FAILED"))
        env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
               "DRS_TEARDOWN_DB": sqlite_db}
        r = cli(["run", "--all", "--yes", option, "T" * size, "--output", "json"], env)
        doc = document(r)
        assert r.exit_code == 1 and needle in doc["error"] and ("255" in doc["error"] or "4096" in doc["error"])
        assert len(r.stdout) < 1000 and len(r.stderr) < 1000  # the value is not echoed back
        assert sim.requests == []


def test_the_longest_ticket_a_shell_can_pass_is_refused_by_a_real_process(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        proc = drs(["run", "--all", "--yes", "--ticket", "T" * 100_000, "--output", "json"],
                   user_env(url, f"sqlite:///{tmp_path / 'x.db'}"))
        assert sim.requests == []
    assert proc.returncode == 1 and "ticket" in document(proc)["error"] and len(proc.stdout) < 1000
    clean(proc)


# -- database URLs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder, name", [("a@b", "a.db"), ("p%c", "100%.db"), ("h#x", "a.db"),
                                          ("sp ace", "a b.db"), ("c:olon", "x.db")])
def test_any_legal_sqlite_url_works_end_to_end(tmp_path: Path, folder: str, name: str) -> None:
    (tmp_path / folder).mkdir()
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        # Relative (cwd) as the issue's `sqlite:///a@b/a.db`, and absolute.
        for db, cwd in ((f"sqlite:///{folder}/{name}", tmp_path), (f"sqlite:///{tmp_path}/{folder}/{name}", None)):
            proc = drs(["--db", db, "run", job, "--yes", "--missing-ok", "--output", "json", *FAST],
                       user_env(url, "sqlite:///unused.db"), cwd=cwd or ROOT)
            assert proc.returncode == 0 and document(proc)["run_id"], proc.stderr[-2000:]
            clean(proc)
            st = drs(["--db", db, "status", "--output", "json"], user_env(None, "sqlite:///unused.db"), cwd=cwd or ROOT)
            assert len(document(st)["runs"]) >= 1
    assert sorted(p.name for p in (tmp_path / folder).iterdir() if p.suffix == ".db") == [name]
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize("db, says", [
    ("sqlite:///{tmp}/run?1.db", "'1.db'; a '?' in a file name is written %3F"),
    ("x.db", "'x.db' is a path, not a database URL; write sqlite:///x.db"),
    ("{tmp}/x.db", "is a path, not a database URL; write sqlite:///"),
    (f"postgresql://drs:{PG_SECRET}@p@ss@127.0.0.1:1/x", "an '@' in a user name or password is written %40"),
])
def test_a_database_url_that_would_go_wrong_is_refused_with_a_hint(tmp_path: Path, db: str, says: str) -> None:
    db = db.format(tmp=tmp_path)
    with simulator() as (sim, url):
        proc = drs(["--db", db, "run", JOB, "--yes", "--output", "json"], user_env(url, "sqlite:///unused.db"),
                   cwd=tmp_path)
        assert sim.requests == []
    assert proc.returncode == 1 and says in document(proc)["error"] and says in proc.stderr
    clean(proc, PG_SECRET, "p@ss")
    assert list(tmp_path.iterdir()) == []  # no file left behind ('run' included)


@pytest.mark.parametrize("password", [PG_SECRET, f"{PG_SECRET}%p@ss:w#rd/?"])
def test_a_postgres_password_never_reaches_the_output(password: str) -> None:
    """A server that refuses the connection: the JSON error and stderr name the database, never the password."""
    escaped = quote(password, safe="")
    for command in (["status"], ["run", JOB, "--yes"], ["verify"], ["db", "upgrade"]):
        proc = drs(["--db", f"postgresql+psycopg://drs:{escaped}@127.0.0.1:1/teardown", *command, "--output", "json"],
                   user_env(None, "sqlite:///unused.db"))
        doc = document(proc)
        assert proc.returncode == 4 and "127.0.0.1:1/teardown" in doc["error"] and "drs:***@" in doc["error"]
        clean(proc, password, escaped, quote(password), PG_SECRET)


@pytest.mark.postgres
def test_a_percent_escaped_postgres_password_works_through_the_cli(pg_url: str) -> None:
    import psycopg

    role, password = "drs_i18_pw", f"{PG_SECRET}%p@ss:w#rd"
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    try:
        db = f"postgresql://{role}:{quote(password, safe='')}@{pg_url.split('@', 1)[1]}"
        with simulator() as (sim, url):
            job = sim.add_job(JobSpec(status="CREATE_FAILED"))
            proc = drs(["--db", db, "-v", "run", job, "--yes", "--output", "json", *FAST], user_env(url, "sqlite:///x"))
        assert proc.returncode == 0 and document(proc)["counts"] == {"deleted": 1}, proc.stderr[-2000:]
        clean(proc, password, quote(password, safe=""), PG_SECRET)
    finally:
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


# -- the contract: endpoints, output files, repeated options, a refused login ------------------------------------

def test_an_endpoint_with_a_trailing_newline_works_in_a_real_process(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        proc = drs(["plan", job, "--output", "json"], user_env(url + "\n", f"sqlite:///{tmp_path / 'x.db'}"))
    assert proc.returncode == 0 and document(proc)["items"][0]["job_id"] == job
    clean(proc)


def test_output_files_are_checked_before_any_read(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        sim.add_jobs(3, JobSpec(status="CREATE_FAILED"))
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}")
        plan = drs(["plan", "--all", "-o", "/nonexistent/p.json", "--output", "json"], env)
        folder = drs(["plan", "--all", "-o", str(tmp_path), "--output", "json"], env)
        assert sim.requests == []
        run = drs(["run", "--all", "--yes", "--output", "json", *FAST], env)
    assert plan.returncode == 1 and "-o /nonexistent/p.json" in document(plan)["error"]
    assert folder.returncode == 1 and "is a directory" in document(folder)["error"]
    run_id = document(run)["run_id"]
    bad = drs(["report", run_id, "--html", "/nonexistent/r.html", "--output", "json"], env)
    assert bad.returncode == 1 and "--html /nonexistent/r.html" in document(bad)["error"]
    dash = drs(["report", run_id, "--html", "-"], env, cwd=tmp_path)
    assert dash.returncode == 0 and dash.stdout.startswith("<!DOCTYPE html>") and not (tmp_path / "-").exists()
    for proc in (plan, folder, run, bad, dash):
        clean(proc)


def test_a_report_onto_a_read_only_file_system_is_a_message(tmp_path: Path, sqlite_db: str) -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare(1) (a private mount namespace) for a read-only mount")
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        run_id = document(drs(["run", job, "--yes", "--output", "json", *FAST], user_env(url, sqlite_db)))["run_id"]
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount -t tmpfs -o ro none {ro} && exec {sys.executable} -m orchestrator report {run_id} "
              f"--html {ro}/r.html --output json")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          env=user_env(None, sqlite_db))
    assert proc.returncode == 1 and f"--html {ro}/r.html: cannot write" in document(proc)["error"]
    clean(proc)


def test_a_single_valued_option_given_twice_is_refused(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}")
        for args in (["plan", "--all", "--project-id", PROJECT, "--project-id", "b" * 32],
                     ["--db", "sqlite:///a.db", "--db", "sqlite:///b.db", "status"],
                     ["run", "--all", "--yes", "--batch-size=5", "--batch-size", "6"]):
            proc = drs([*args, "--output", "json"], env, cwd=tmp_path)
            assert proc.returncode == 1 and "given 2 times" in document(proc)["error"], args
            clean(proc)
        assert sim.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["plan", "--all"], ["plan", JOB], ["run", JOB, "--yes"]])
def test_a_refused_iam_login_is_one_message_and_no_warning(tmp_path: Path, args: list[str]) -> None:
    """IAM refuses the password: the calls still in flight (the listing beside the detail read, say) are
    cancelled or their errors retrieved — no RuntimeWarning, no "exception was never retrieved" traceback."""
    sim = Simulator(project_id=PROJECT, jobs=3, profile="fast", iam_users=[("acme", "alice", "right-pw")])
    with sim.serve() as url:
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}", DRS_TEARDOWN_IAM_ENDPOINT=url,
                       DRS_TEARDOWN_IAM_USER="alice", DRS_TEARDOWN_IAM_DOMAIN="acme",
                       DRS_TEARDOWN_IAM_PASSWORD="wrong-pw-secret")
        env.pop("DRS_TEARDOWN_AUTH_TOKEN")
        proc = drs([*args, "--output", "json"], env)
        assert sim.destructive_calls == []
    assert proc.returncode == 1 and "refused a token" in document(proc)["error"]
    clean(proc, "wrong-pw-secret")


def test_plan_documents_carry_the_exit_code_also_when_a_rail_refuses(tmp_path: Path) -> None:
    with simulator() as (sim, url):
        sim.add_jobs(3, JobSpec(status="CREATE_FAILED"))
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}")
        ok = drs(["plan", "--all", "--output", "json"], env)
        refused = drs(["plan", "--all", "--max-targets", "2", "--output", "json"], env)
        artifact = drs(["plan", "--all", "--max-targets", "2", "-o", "-"], env)
        assert sim.destructive_calls == []
    assert ok.returncode == 0 and len(document(ok)["items"]) == 3
    doc = document(refused)
    assert refused.returncode == 2 and "--max-targets 2" in doc["error"] and len(doc["items"]) == 3
    assert artifact.returncode == 2 and document(artifact)["hash"] and "--max-targets 2" in artifact.stderr
    for proc in (ok, refused, artifact):
        clean(proc)


def test_python_m_on_the_lifecycle_prints_no_warning() -> None:
    proc = subprocess.run([sys.executable, "-W", "always", "-m", "orchestrator.lifecycle"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("stateDiagram-v2")
    clean(proc)


# -- streams ----------------------------------------------------------------------------------------------

def test_results_go_to_stdout_so_pipes_and_redirections_work(tmp_path: Path) -> None:
    """`status RUN | grep blocked`, `verify > verdict.txt`: results on stdout, messages on stderr; every reporting
    command takes --output text|json."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        blocked = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", period_order_id="CS0001"))
        env = user_env(url, db)
        run = drs(["run", job, blocked, "--yes", *FAST], env)
        plan = drs(["plan", job, blocked], env)
    assert run.returncode == 3 and blocked in run.stdout and "consent" in run.stderr
    assert blocked in plan.stdout and "plan hash" in plan.stderr
    run_id = document(drs(["status", "--output", "json"], env))["runs"][0]["run_id"]
    status = drs(["status", run_id], env)
    assert status.returncode == 0 and [line for line in status.stdout.splitlines() if "blocked" in line]
    assert status.stderr == ""
    verify = drs(["verify"], env)
    assert verify.returncode == 0 and "ok run" in verify.stdout and verify.stderr == ""
    audit = drs(["audit", run_id, "--output", "text"], env)
    assert audit.returncode == 0 and "run_recorded" in audit.stdout and audit.stderr == ""
    report = drs(["report", run_id, "--html", str(tmp_path / "r.html"), "--output", "text"], env)
    assert report.returncode == 0 and report.stdout == "" and "r.html" in report.stderr
    one = drs(["status", run_id, "--output", "json"], env)
    assert document(one)["exit_code"] == 0 and document(one)["run_exit_code"] == 3  # the run's own code
    for command in (["status"], ["status", run_id], ["verify"], ["audit", run_id],
                    ["report", run_id, "--html", str(tmp_path / "r2.html")], ["db", "upgrade"], ["resume"]):
        proc = drs([*command, "--output", "json"], env)
        assert document(proc)["exit_code"] == proc.returncode == 0, command
        clean(proc)
    for proc in (run, plan, status, verify, audit, report):
        clean(proc)



def test_a_ca_bundle_or_a_plan_file_that_is_not_one_is_refused_naming_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    huge = tmp_path / "plan.json"
    with open(huge, "wb") as fh:
        fh.truncate(65 << 20)  # sparse: 65 MiB of zeros, over the 64 MiB cap
    with simulator() as (sim, url):
        env = user_env(url, f"sqlite:///{tmp_path / 'x.db'}")
        cases = [(["plan", "--all", "--ca-bundle", "/dev/zero"], "--ca-bundle /dev/zero: not a regular file"),
                 (["plan", "--all", "--ca-bundle", str(junk)], f"--ca-bundle {junk}: not a PEM CA bundle"),
                 (["run", "--plan", str(huge), "--yes"], f"--plan {huge}: larger than 64 MiB"),
                 (["run", "--plan", "/dev/zero", "--yes"], "--plan /dev/zero: not a file")]
        for args, says in cases:
            proc = drs([*args, "--output", "json"], env)
            assert proc.returncode == 1 and says in document(proc)["error"], (args, proc.stdout, proc.stderr)
            clean(proc)
        assert sim.requests == []
