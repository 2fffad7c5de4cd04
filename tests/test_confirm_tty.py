"""Interactive confirmation in a real pseudo-terminal: typing the project id runs, anything else refuses."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

from orchestrator.simulator import JobSpec
from tests.kit import PROJECT, TOKEN, simulator


def _run_in_pty(args: list[str], env: dict[str, str], answer: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run the CLI on a pty, answer the prompt, return (exit code, everything it printed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "orchestrator", *args], env)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal: it is exiting
                chunk = b""
            if not chunk:
                _, status = os.waitpid(pid, 0)
                os.close(fd)
                return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
            out += chunk
        if not answered and b"to confirm" in out:
            os.write(fd, answer.encode() + b"\r")
            answered = True
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            try:
                while chunk := os.read(fd, 65536):
                    out += chunk
            except OSError:
                pass
            os.close(fd)
            return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the CLI did not finish in {timeout}s; it printed:\n{out.decode(errors='replace')}")


def _env(url: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update(DRS_TEARDOWN_AUTH_TOKEN=TOKEN, DRS_TEARDOWN_PROJECT_ID=PROJECT, DRS_TEARDOWN_ENDPOINT=url,
               DRS_TEARDOWN_DB=db, COLUMNS="160", TERM="xterm")
    return env


def test_typing_the_project_id_confirms(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        code, out = _run_in_pty(["run", job, "--poll-interval", "0.05"], _env(url, sqlite_db), PROJECT)
        assert code == 0, out
        assert sim.status_of(job) in ("DELETED", None)
    assert "typed-project-id" in out


def test_a_wrong_answer_refuses_and_sends_nothing(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="CREATE_FAILED"))
        code, out = _run_in_pty(["run", job], _env(url, sqlite_db), "yes")
        assert code == 2, out
        assert "did not match" in out
        assert sim.destructive_calls == []


def test_the_confirmation_names_each_order_and_says_it_is_a_billing_action(sqlite_db: str) -> None:
    with simulator() as (sim, url):
        job = sim.add_job(JobSpec(status="INCRE_TRANSFER_STARTED", period_order_id="CS2611011200ABCDE"))
        env = {**_env(url, sqlite_db), "DRS_TEARDOWN_BSS_ENDPOINT": url}
        code, out = _run_in_pty(["run", job, "--unsubscribe-prepaid", "--poll-interval", "0.05"], env, "no")
        assert sim.bss_calls == [] and sim.destructive_calls == []  # refused: nothing sent, not even to BSS
    assert code == 2, out
    assert "BILLING ACTION" in out and "CS2611011200ABCDE" in out
