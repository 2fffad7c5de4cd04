"""Deadlines and escalation: a task the service never releases ends `timed_out` within its stop timeout, the
run timeout bounds everything, and RELEASE_RESOURCE_FAILED is re-terminated a bounded number of times, then
force-terminated (or failed under --no-force), each step recorded with why.

The engine runs on a FakeClock (waits cost no real time), against the simulator over loopback; only tasks that
need no real-time release take part, so fake hours pass in a second.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.engine import Tuning
from orchestrator.errors import OutcomeUnknown, TransportFailure
from orchestrator.wire import StopRequest
from tests.kit import PROJECT, Teardown, add, simulator, sqlite_url, teardown

JOB = "11111111-2222-4333-8444-555555555555"


def _records(td: Teardown, job_id: str) -> list[tuple[str, str | None, str | None]]:
    return [(r.trigger, r.to_state, r.detail) for r in td.store.records(td.run_id) if r.job_id == job_id]


def _job(td: Teardown, job_id: str) -> dict[str, str]:
    return next(j for j in td.summary.jobs if j["job_id"] == job_id)


def _calls(td: Teardown, job_id: str) -> list[str]:
    return [c["delete_type"] for c in td.sim.destructive_calls if c["job_id"] == job_id]


def test_a_task_never_released_times_out_at_its_stop_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    with simulator(profile="fast") as (sim, url):
        (stuck,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", never_releases=True)
        (done,) = add(sim, 1, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        started = time.monotonic()
        td = teardown(sim, url, sqlite_url(tmp_path), clock=clock, poll_interval=5.0, stop_timeout=900.0)
        assert time.monotonic() - started < 10  # a quarter of an hour of fake time, not of real time
    assert td.outcomes == {stuck: "timed_out", done: "deleted"}
    job = _job(td, stuck)
    assert job["remote_status"] == "RELEASE_RESOURCE_STARTED"
    assert job["reason"] == ("stop-timeout (900s) passed; last status RELEASE_RESOURCE_STARTED; "
                             "stopped by this run, not deleted")
    assert td.summary.exit_code == 3
    run = td.store.run(td.run_id)
    assert run is not None and run.status == "finished" and run.exit_code == 3
    (timed_out,) = [r for r in td.store.records(td.run_id) if r.trigger == "time_out"]
    assert timed_out.remote_status == "RELEASE_RESOURCE_STARTED"
    # Within its deadline: the loop wakes for it, it does not oversleep a poll interval (or a whole hour).
    assert timedelta(seconds=900) <= timed_out.at.replace(tzinfo=run.created_at.tzinfo) - run.created_at \
        <= timedelta(seconds=905)
    assert _calls(td, stuck) == ["terminate"]  # polled, never re-stopped while the service is releasing


def test_the_run_timeout_bounds_every_task(tmp_path: Path) -> None:
    clock = FakeClock()
    with simulator(profile="fast") as (sim, url):
        stuck = add(sim, 3, status="INCRE_TRANSFER_STARTED", never_releases=True)
        td = teardown(sim, url, sqlite_url(tmp_path), clock=clock, poll_interval=5.0, stop_timeout=86_400.0,
                      timeout=600.0)
    assert set(td.outcomes.values()) == {"timed_out"}
    for job_id in stuck:
        assert _job(td, job_id)["reason"] == ("run timeout (600s) passed; last status RELEASE_RESOURCE_STARTED; "
                                              "stopped by this run, not deleted")
    assert 600 <= clock.monotonic() <= 605


def test_a_task_busy_for_ever_times_out_at_its_delete_timeout(tmp_path: Path) -> None:
    """DRS.M01504 on every delete: each is requeued with backoff, and the delete phase is not restarted by
    the re-observations in between, so the delete timeout ends it."""
    clock = FakeClock()
    with simulator(profile="fast") as (sim, url):
        (busy,) = add(sim, 1, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration", busy_times=10_000)
        td = teardown(sim, url, sqlite_url(tmp_path), clock=clock, poll_interval=5.0, delete_timeout=300.0)
    job = _job(td, busy)
    assert job["outcome"] == "timed_out", job
    assert job["reason"].startswith("delete-timeout (300s) passed")
    assert clock.monotonic() <= 300 + 5
    busy_records = [d for t, _, d in _records(td, busy) if t == "requeue"]
    assert busy_records and all("DRS.M01504" in (d or "") for d in busy_records)


def test_release_failed_is_re_terminated_then_force_terminated_with_reasons(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", release_fails=True)
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        assert not any(sim.violations.values()), dict(sim.violations)
    assert td.outcomes[job] == "deleted"
    attempts = Tuning().terminate_attempts
    assert _calls(td, job) == ["terminate"] * attempts + ["force_terminate", "delete"]
    stops = [d for t, _, d in _records(td, job) if t == "stop"]
    assert stops[0] == "terminate: INCRE_TRANSFER_STARTED must be stopped first"
    assert stops[1] == "RELEASE_RESOURCE_FAILED after 1 terminate(s): terminate again (attempt 2)"
    assert stops[-1] == (f"RELEASE_RESOURCE_FAILED after {attempts} terminate(s): escalating to "
                         f"force_terminate (attempt {attempts + 1})")
    (task,) = [t for t in td.store.tasks(td.run_id) if t.job_id == job]
    assert task.forced and task.stop_attempts == attempts + 1


def test_no_force_fails_the_task_with_the_reason_instead_of_escalating(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", release_fails=True)
        (ok,) = add(sim, 1, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, no_force=True)
    attempts = Tuning().terminate_attempts
    assert td.outcomes == {job: "failed", ok: "deleted"}
    assert _job(td, job)["reason"] == (f"RELEASE_RESOURCE_FAILED after {attempts} terminate(s); --no-force "
                                       "forbids force_terminate")
    assert _calls(td, job) == ["terminate"] * attempts
    assert Counter(c["delete_type"] for c in td.sim.destructive_calls)["force_terminate"] == 0
    assert td.summary.exit_code == 3


# -- no call waits for ever ----------------------------------------------------------------------------------


def test_a_silent_server_cannot_hang_a_call() -> None:
    """A server that accepts and never answers: each attempt ends at the read timeout, the attempts are
    bounded, and a destructive call is not retried at all (its outcome is unknown)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(32)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"

        async def both() -> None:
            async with DrsClient(url, PROJECT, clock=FakeClock(), timeout=httpx.Timeout(0.2),
                                 retry=RetryPolicy(attempts=3)) as client:
                with pytest.raises(TransportFailure) as read:
                    await client.status_chunk([JOB])
                assert not isinstance(read.value, OutcomeUnknown)
                with pytest.raises(OutcomeUnknown):
                    await client.stop([StopRequest(JOB)])
                assert client.stats["transport"] == 4  # 3 reads, 1 stop

        started = time.monotonic()
        asyncio.run(both())
        assert time.monotonic() - started < 5


def test_a_trickling_answer_meets_the_exchange_deadline() -> None:
    async def trickle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)  # never in time
        return httpx.Response(200, json={})

    async def both() -> None:
        async with DrsClient("https://drs.example.test", PROJECT, transport=httpx.MockTransport(trickle),
                             clock=FakeClock(), exchange_deadline=0.1,
                             retry=RetryPolicy(attempts=2)) as client:
            with pytest.raises(TransportFailure) as read:
                await client.status_chunk([JOB])
            assert read.value.code == "ExchangeDeadline" and not isinstance(read.value, OutcomeUnknown)
            with pytest.raises(OutcomeUnknown):
                await client.stop([StopRequest(JOB)])

    started = time.monotonic()
    asyncio.run(both())
    assert time.monotonic() - started < 2
