"""`python -m orchestrator.simulator serve`: prints its URL first, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from orchestrator.drs import signing

PROJECT = "0123456789abcdef0123456789abcdef"


def test_serve_prints_url_serves_and_stops_on_sigterm() -> None:
    env = dict(os.environ, HUAWEICLOUD_SDK_AK="CLIAK", HUAWEICLOUD_SDK_SK="CLISK")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.simulator",
            "serve",
            "--port",
            "0",
            "--jobs",
            "12",
            "--seed",
            "4",
            "--profile",
            "fast",
            "--token",
            "cli-token",
            "--token",
            "other-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        words = line.split()
        assert words[3:] == ["project", PROJECT, "region", "cn-north-4"], line
        url = words[2]
        with httpx.Client(base_url=url, headers={"Content-Type": "application/json"}) as c:
            jobs = c.get("/_sim/jobs").json()["jobs"]
            assert len(jobs) == 12
            body = b'{"db_use_type": "sync"}'
            headers = {
                "Content-Type": "application/json",
                "X-Sdk-Date": signing.sdk_date(),
                "Host": httpx.URL(url).netloc.decode(),
            }
            headers["Authorization"] = signing.sign(
                access_key="CLIAK",
                secret_key="CLISK",
                method="POST",
                path=f"/v3/{PROJECT}/jobs",
                query=[],
                headers=headers,
                body=body,
            )
            r = c.post(f"/v3/{PROJECT}/jobs", content=body, headers=headers)
            assert r.status_code == 200, r.text  # the AK/SK pair came from the environment
            for token in ("cli-token", "other-token"):
                r = c.post(
                    f"/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers={"X-Auth-Token": token}
                )
                assert r.status_code == 200
            assert (
                c.post(
                    f"/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers={"X-Auth-Token": "nope"}
                ).status_code
                == 401
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_serve_rejects_an_unknown_profile() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.simulator", "serve", "--profile", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unknown simulator profile" in proc.stderr


def test_simulator_group_is_a_click_group() -> None:
    import click

    from orchestrator.simulator.command import simulator_group

    assert isinstance(simulator_group, click.Group)
    assert simulator_group.name == "simulator" and "serve" in simulator_group.commands


def _serve(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.simulator", "serve", "--profile", "fast", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[2]


def test_two_processes_as_regions_accept_each_others_tokens() -> None:
    other = "fedcba9876543210fedcba9876543210"
    env = dict(os.environ, DRS_TEARDOWN_IAM_USER="bob", DRS_TEARDOWN_IAM_PASSWORD="pw-123456",
               DRS_TEARDOWN_IAM_DOMAIN="acme")
    a, url_a = _serve("--region", "cn-north-4", "--project", f"ap-southeast-1={other}", env=env)
    b, url_b = _serve("--region", "ap-southeast-1", "--project-id", other, env=env)
    try:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "bob", "password": "pw-123456", "domain": {"name": "acme"}}}},
            "scope": {"project": {"name": "ap-southeast-1"}}}}
        r = httpx.post(f"{url_a}/v3/auth/tokens", json=body)  # region A's IAM, scoped to region B's project
        assert r.status_code == 201, r.text
        token = r.headers["x-subject-token"]
        headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
        assert httpx.post(f"{url_b}/v3/{other}/jobs", json={"db_use_type": "sync"}, headers=headers).status_code == 200
        r = httpx.post(f"{url_a}/v3/{PROJECT}/jobs", json={"db_use_type": "sync"}, headers=headers)
        assert (r.status_code, r.json()["error_code"]) == (403, "DRS.M00261")
        forged = dict(headers, **{"X-Auth-Token": token[:-2] + ("AA" if not token.endswith("AA") else "BB")})
        assert httpx.post(f"{url_b}/v3/{other}/jobs", json={"db_use_type": "sync"}, headers=forged).status_code == 401
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
