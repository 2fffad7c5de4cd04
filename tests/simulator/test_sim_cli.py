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
