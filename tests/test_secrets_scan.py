"""A full teardown with each credential source at -v, then a scan of everything we wrote for the secrets:
the database files, stdout/stderr, the audit exports and the HTML report. None may appear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.simulator import JobSpec, Simulator
from tests.kit import PROJECT

TOKEN = "tok-DISTINCTIVE-7f3a9c1e5b2d4f6a8c0e"
AK = "HPUADISTINCTIVEAK123"
SK = "SK-DISTINCTIVE-secret-0000000000000000000"
SEC_TOKEN = "STS-DISTINCTIVE-security-token-9999"
IAM = ("teardown-bot", "Pw-DISTINCTIVE-hunter2-Zq9", "acme")


def _env(url: str, db: str, source: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update(DRS_TEARDOWN_ENDPOINT=url, DRS_TEARDOWN_PROJECT_ID=PROJECT, DRS_TEARDOWN_DB=db)
    if source == "token":
        env["DRS_TEARDOWN_AUTH_TOKEN"] = TOKEN
    elif source == "aksk":
        env.update(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK, HUAWEICLOUD_SDK_SECURITY_TOKEN=SEC_TOKEN)
    else:
        env.update(DRS_TEARDOWN_IAM_USER=IAM[0], DRS_TEARDOWN_IAM_PASSWORD=IAM[1], DRS_TEARDOWN_IAM_DOMAIN=IAM[2],
                   DRS_TEARDOWN_IAM_ENDPOINT=url)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("source", ["token", "iam", "aksk"])
def test_full_teardown_with_each_source_leaks_no_secret(source: str, tmp_path: Path) -> None:
    sim = Simulator(project_id=PROJECT, seed=2, profile="fast", tokens={TOKEN}, aksk={AK: SK},
                    security_tokens={AK: SEC_TOKEN}, iam_users={IAM})
    ids = sim.add_jobs(6, JobSpec(status="INCRE_TRANSFER_STARTED"))
    db = tmp_path / "scan.db"
    with sim.serve() as url:
        env = _env(url, f"sqlite:///{db}", source)
        if source == "iam":
            # Every token expires right after the first stops go out: it must be renewed without failing a task.
            def expire_mid_run() -> None:
                for _ in range(600):  # bounded: at most 60 s
                    if sim.destructive_calls:
                        sim.expire_tokens()
                        return
                    time.sleep(0.1)

            threading.Thread(target=expire_mid_run, daemon=True).start()
        run = _cli(["-vv", "run", *ids, "--yes", "--output", "json", "--poll-interval", "0.2",
                    "--ticket", "CHG-1"], env)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout)
        assert summary["counts"] == {"deleted": 6}
        violations = dict(sim.violations)
        if source == "iam":
            # The expired token is refused once per request in flight, then renewed.
            assert violations.pop("unauthenticated", 0) <= 16
        assert violations == {}
        issued = [t for t, v in sim.authenticator._tokens.items() if v.user != "configured"]
        if source == "iam":
            assert len(issued) >= 2, "the expired token was renewed"
        run_id = summary["run_id"]
        outputs = [run.stdout, run.stderr]
        for fmt in ("table", "json", "csv"):
            a = _cli(["audit", run_id, "--format", fmt], env)
            assert a.returncode == 0, a.stderr
            outputs += [a.stdout, a.stderr]
        html = tmp_path / "r.html"
        r = _cli(["report", run_id, "--html", str(html)], env)
        assert r.returncode == 0, r.stderr
        outputs.append(html.read_text())
    # -v really logged requests (so the scan means something), with the auth headers masked.
    assert "batch-jobs" in run.stderr and "***" in run.stderr
    secrets = [TOKEN, SK, SEC_TOKEN, IAM[1], *issued]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.relative_to(tmp_path).parts[0].startswith("scan.db")]
    blobs = [p.read_bytes() for p in files]
    for secret in secrets:
        for text in outputs:
            assert secret not in text, f"{source}: a secret leaked into an output"
        for blob in blobs:
            assert secret.encode() not in blob, f"{source}: a secret leaked into the database"
    # The identity is recorded instead.
    trail = json.loads(_cli(["audit", run_id, "--format", "json"], env).stdout)
    credential = trail[0]["actor"]["credential"]
    assert credential.startswith({"token": "iam-token:", "iam": "iam-user:acme/teardown-bot",
                                  "aksk": "aksk:HPUA"}[source])
    if source == "aksk":
        assert AK not in credential
