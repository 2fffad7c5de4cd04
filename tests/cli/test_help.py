"""Help that teaches (issue 17): examples, exit codes, environment, -h everywhere, completion, valid values,
did-you-mean for config keys, and --log-format json on stderr."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.simulator import JobSpec
from tests.kit import PROJECT, TOKEN, cli, simulator

COMMANDS = ["demo", "plan", "run", "resume", "worker", "status", "audit", "verify", "report", "completion"]


def test_top_level_help_lists_exit_codes_and_environment() -> None:
    h = cli(["-h"])
    assert h.exit_code == 0
    for needle in ("Exit codes:", "130", "refused by a safety rail", "DRS_TEARDOWN_AUTH_TOKEN",
                   "HUAWEICLOUD_SDK_AK", "DRS_TEARDOWN_LOG_FORMAT", "DRS_TEARDOWN_LANGUAGE", "--log-format",
                   "--language", *COMMANDS, "db", "simulator"):
        assert needle in h.stdout, needle


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_examples_and_takes_dash_h(command: str) -> None:
    h = cli([command, "-h"])
    assert h.exit_code == 0, h.output
    assert ("Examples:" in h.stdout) or ("Install:" in h.stdout), h.stdout
    if command != "completion":
        assert "--output" in h.stdout


def test_groups_take_dash_h_too() -> None:
    assert cli(["db", "-h"]).exit_code == 0
    assert "Example" in cli(["db", "upgrade", "-h"]).stdout
    sim = cli(["simulator", "-h"])
    assert sim.exit_code == 0 and "serve" in sim.stdout


def test_the_simulator_takes_dash_h_on_its_own_and_says_so() -> None:
    """`-h` is the simulator's own option, listed in its help, also without the main CLI (python -m)."""
    for args in (["simulator", "-h"], ["simulator", "serve", "-h"], ["simulator", "serve", "--port", "1", "-h"]):
        h = cli(args)
        assert h.exit_code == 0 and "-h, --help" in h.stdout, (args, h.output)
    alone = subprocess.run([sys.executable, "-m", "orchestrator.simulator", "serve", "-h"], capture_output=True,
                           text=True, timeout=60)
    assert alone.returncode == 0 and "-h, --help" in alone.stdout and "--profile" in alone.stdout, alone.stderr


@pytest.mark.parametrize("shell, needle", [("bash", "complete -o"), ("zsh", "compdef"),
                                           ("fish", "complete --no-files --command drs-teardown")])
def test_completion_scripts(shell: str, needle: str) -> None:
    r = cli(["completion", shell])
    assert r.exit_code == 0 and needle in r.stdout and "_DRS_TEARDOWN_COMPLETE" in r.stdout


def test_invalid_values_list_the_valid_ones_and_status_takes_any_case(sqlite_db: str) -> None:
    bad = cli(["plan", "--status", "pausingg"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert bad.exit_code == 1
    assert bad.stderr.count("_") > 20 and "PAUSING" in bad.stderr and "NODE_UPGRADE_FAILED" in bad.stderr
    lang = cli(["--language", "fr", "status"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert lang.exit_code == 1 and "en-us" in lang.stderr and "zh-cn" in lang.stderr
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="PAUSING"))
        ok = cli(["plan", "--all", "--status", "pausing", "--output", "json"],
                 {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                  "DRS_TEARDOWN_ENDPOINT": url, "DRS_TEARDOWN_DB": sqlite_db})
    assert ok.exit_code == 0 and [i["job_id"] for i in json.loads(ok.stdout)["items"]] == [job]


def test_every_unknown_config_key_is_reported_with_a_did_you_mean(tmp_path: Path, sqlite_db: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nbatchsize = 5\npoll_intervall = 2\nregion = "x"\n[dbs]\nurl = "y"\n')
    r = cli(["--config", str(cfg), "status"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1
    for needle in ("'batchsize'", "did you mean batch_size", "'poll_intervall'", "did you mean poll_interval",
                   "'region'", "belongs in [drs]", "[dbs]"):
        assert needle in r.stderr, needle


def test_language_reaches_the_client(sqlite_db: str) -> None:
    from orchestrator.clock import RealClock
    from orchestrator.config import load_settings
    from orchestrator.usecases import connect, make_client

    settings = load_settings(None, {"DRS_TEARDOWN_LANGUAGE": "zh-CN", "DRS_TEARDOWN_ENDPOINT": "http://127.0.0.1:9",
                                    "DRS_TEARDOWN_PROJECT_ID": PROJECT}, {"db": sqlite_db})
    assert settings.language == "zh-cn"
    client = make_client(connect(settings, {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}), settings, RealClock())
    assert client.language == "zh-cn"  # sent as X-Language on every call (tests/drs/test_language_and_logs.py)


def test_log_format_json_makes_every_stderr_line_a_json_object(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED"))
        r = cli(["--log-format", "json", "-v", "--progress-interval", "0.1", "run", job, "--yes",
                 "--poll-interval", "0.05"],
                {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
                 "DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "event"} <= set(line) for line in lines)
    assert any(line["event"] == "progress" and line.get("run_id") for line in lines)
    assert any(line["event"].startswith("run ") for line in lines)
    responses = [line for line in lines if line.get("status") and line.get("method")]
    assert responses and all(line["path"].startswith("/v3/") and "request_id" in line for line in responses)
    assert TOKEN not in r.stderr + r.stdout


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_language_zh_cn_reaches_the_simulator_and_its_message_shows_as_it_came(how: str, tmp_path: Path,
                                                                               sqlite_db: str) -> None:
    """`--language zh-cn` (or DRS_TEARDOWN_LANGUAGE, or [drs] language) is the X-Language of every DRS call the
    run makes, and the service's Chinese error_msg reaches the trail unchanged."""
    env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_DB": sqlite_db}
    head: list[str] = []
    if how == "flag":
        head = ["--language", "zh-cn"]
    elif how == "env":
        env["DRS_TEARDOWN_LANGUAGE"] = "zh-cn"
    else:
        (tmp_path / "c.toml").write_text('[drs]\nlanguage = "zh-cn"\n')
        head = ["--config", str(tmp_path / "c.toml")]
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", busy_times=1))  # the first stop: DRS.M01504
        env["DRS_TEARDOWN_ENDPOINT"] = url
        r = cli([*head, "run", job, "--yes", "--poll-interval", "0.05", "--output", "json"], env)
        languages = sim.languages
    assert r.exit_code == 0, r.output
    assert set(languages) == {"zh-cn"} and sum(languages.values()) >= 4, languages
    trail = cli(["audit", json.loads(r.stdout)["run_id"], "--format", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    refused = [rec["detail"] for rec in json.loads(trail.stdout) if rec["error_code"] == "DRS.M01504"]
    assert refused and all("迁移任务正在进行其他操作或迁移任务异常，请稍后重试。" in why for why in refused), refused


def _helps() -> str:
    commands = [[], *([c] for c in COMMANDS), ["db", "upgrade"], ["simulator", "serve"]]
    return "\n".join(cli([*c, "-h"]).stdout for c in commands)


def test_the_readme_help_examples_are_what_the_help_shows() -> None:
    """Every command line in the README's "Help, completion, language and logs" section is, verbatim, a line of
    some command's --help (the examples and the completion install lines), and `simulator serve` shows its
    examples too."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Help, completion, language and logs"):readme.index("## Progress and the report")]
    blocks = re.findall(r"```console\n(.*?)```", section, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert len(lines) >= 8
    helps = _helps()
    shown = {re.sub(r"^\w+:\s+", "", line.strip()) for line in helps.splitlines()}  # "bash:  eval ..." -> "eval ..."
    missing = [line for line in lines if line not in shown]
    assert not missing, missing
    assert "Examples:" in cli(["simulator", "serve", "-h"]).stdout


def test_log_format_json_names_the_task_of_each_step_and_request(sqlite_db: str) -> None:
    """-v with --log-format json: each committed task step is a line with its job_id, trigger and states; each
    request about tasks names them (job_id for one, job_ids for a batch); every line parses; no secret."""
    with simulator() as (sim, url):
        jobs = sim.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED"))
        r = cli(["--log-format", "json", "-v", "run", *jobs, "--yes", "--poll-interval", "0.05"],
                {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
                 "DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    steps = [line for line in lines if line["logger"] == "drs_teardown.engine"]
    for job in jobs:
        mine = [(s["trigger"], s["from_state"], s["to_state"]) for s in steps if s.get("job_id") == job]
        assert ("stop", "pending", "stopping") in mine and ("deleted", "deleting", "deleted") in mine, mine
    assert all(s["run_id"] and s["worker"] for s in steps)
    http = [line for line in lines if line.get("api") in ("batch-jobs", "batch-status")]
    assert http and all(set(jobs) >= set(line.get("job_ids") or [line.get("job_id")]) for line in http)
    assert TOKEN not in r.stderr + r.stdout


def test_more_invalid_values_name_the_input_and_list_the_valid_ones(sqlite_db: str) -> None:
    """demo --profile and simulator serve --job-status: a usage error (exit 1) naming the option and listing the
    valid values, not an "unexpected error"."""
    demo = cli(["demo", "--profile", "nope"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert demo.exit_code == 1 and "--profile" in demo.stderr and "unexpected" not in demo.stderr
    assert "bench, calm, fast, rough" in demo.stderr
    status = cli(["simulator", "serve", "--job-status", "NOPE"])
    assert status.exit_code == 1 and "'NOPE'" in status.stderr and "RELEASE_RESOURCE_COMPLETE" in status.stderr
    assert "NODE_UPGRADE_FAILED" in status.stderr


def test_the_progress_line_counts_the_retries_throttles_and_errors_the_service_served(sqlite_db: str) -> None:
    """Without a terminal, the last progress line of a run against a throttling, failing service has its calls,
    retries, throttles (429) and errors (5xx, dropped connections) as the simulator counted them serving the run."""
    from orchestrator.simulator import ApiFaults, load_profile

    profile = load_profile("fast").with_overrides(faults={"batch-status": ApiFaults(throttle_rate=3, throttle_burst=1)})
    with simulator(profile=profile) as (sim, url):
        jobs = sim.add_jobs(3, JobSpec(status="INCRE_TRANSFER_STARTED"))
        sim.set_fault("batch-status", "error_5xx", times=2)
        sim.set_fault("batch-status", "drop_before", times=1)
        r = cli(["--progress-interval", "0.1", "run", *jobs, "--yes", "--poll-interval", "0.05"],
                {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url,
                 "DRS_TEARDOWN_DB": sqlite_db})
        served = dict(sim.faults_served)
    assert r.exit_code == 0, r.output
    last = [line for line in r.stderr.splitlines() if " settled · " in line][-1]
    m = re.search(r"calls (\d+), retries (\d+), throttled (\d+), errors (\d+)", last)
    assert m, last
    calls, retries, throttled, errors = map(int, m.groups())
    assert throttled == served.get("batch-status:throttled", 0) >= 1, (last, served)
    assert errors == served["batch-status:error_503"] + served["batch-status:drop_before"] == 3, (last, served)
    assert retries >= throttled + errors and calls > retries


def test_the_completion_scripts_complete_for_real() -> None:
    """The installed hook works: bash, given `eval "$(drs-teardown completion bash)"`, completes command names and
    option values through the console script; zsh's and fish's protocols answer too (the completion call is
    not taken for an empty command line)."""
    exe = Path(sys.executable).with_name("drs-teardown")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "_DRS_TEARDOWN"))}
    env["PATH"] = f"{exe.parent}{os.pathsep}{env.get('PATH', '')}"
    bash = shutil.which("bash")
    if bash is not None:
        script = ('eval "$(drs-teardown completion bash)"; COMP_WORDS=(drs-teardown re); COMP_CWORD=1; '
                  '_drs_teardown_completion drs-teardown re drs-teardown; echo "${COMPREPLY[@]}"')
        out = subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["report", "resume"], out.stdout + out.stderr
    for shell, words, cword, needle in (("zsh", "drs-teardown audit x --format ", "4", "csv"),
                                        ("fish", "drs-teardown pl", "pl", "plan")):
        call = {**env, "_DRS_TEARDOWN_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
        out = subprocess.run([str(exe)], env=call, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and needle in out.stdout and "no command given" not in out.stderr, out
