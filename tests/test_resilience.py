"""Resilience: retries on a predicate with full-jitter backoff and Retry-After, one pacing budget, IAM
failures, fail-closed answers, SIGINT/SIGTERM, database trouble, and the `rough` profile end to end.

The client tests run on httpx.MockTransport with an injected FakeClock: no real sleeping. The rest run against
the simulator over loopback.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from orchestrator import api
from orchestrator.clock import FakeClock
from orchestrator.drs.auth import IamPasswordAuth
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.drs.codes import DELETABLE
from orchestrator.drs.pacing import Pacer
from orchestrator.engine import Tuning
from orchestrator.engine.tuning import MAX_BAD_READS
from orchestrator.errors import (
    AuthFailure,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    ServerError,
    Throttled,
    TransportFailure,
)
from orchestrator.simulator import Profile, load_profile
from orchestrator.store.repo import Store
from orchestrator.wire import Exchange, StopRequest, issue_permit
from tests.kit import PROJECT, TOKEN, Teardown, add, cli, simulator, sqlite_url, teardown

BASE = "https://drs.example.test"
JOB = "11111111-2222-4333-8444-555555555555"
Handler = Callable[[httpx.Request], httpx.Response]


# -- the client on a MockTransport ---------------------------------------------------------------------------


class Calls:
    """A MockTransport handler answering from a script, noting when (on the fake clock) each call came."""

    def __init__(self, clock: FakeClock, *answers: httpx.Response | Exception | Handler) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.at: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.at.append(self.clock.monotonic())
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer


def _status_ok(*ids: str, status: str = "INCRE_TRANSFER_STARTED") -> httpx.Response:
    ids = ids or (JOB,)
    results = [{"id": i, "status": status} for i in ids]
    return httpx.Response(200, json={"count": len(ids), "results": results},
                          headers={"X-Request-Id": "rid-ok"})


def _jobs_ok(*ids: str) -> httpx.Response:
    ids = ids or (JOB,)
    results = [{"id": i, "status": "success"} for i in ids]
    return httpx.Response(202, json={"count": len(ids), "results": results})


def _error(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "error_msg": f"{code} says no"}, headers=headers)


def _client(calls: Calls, clock: FakeClock, *, auth: httpx.Auth | None = None, attempts: int = 6,
            seed: int = 1, **kw: Any) -> tuple[DrsClient, list[Exchange]]:
    recorded: list[Exchange] = []
    client = DrsClient(BASE, PROJECT, auth=auth, transport=httpx.MockTransport(calls), clock=clock,
                       retry=RetryPolicy(attempts=attempts, base=0.5, cap=30.0, rng=random.Random(seed)),
                       recorder=recorded.append, **kw)
    return client, recorded


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_full_jitter_backoff_stays_under_its_exponential_cap_and_uses_the_range() -> None:
    policy = RetryPolicy(base=0.5, cap=30.0, rng=random.Random(7))
    for attempt in range(1, 12):
        bound = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= s <= bound for s in samples)
        assert max(samples) > 0.8 * bound and min(samples) < 0.2 * bound  # full jitter: all of [0, bound]
    assert 7.0 <= policy.backoff(3, retry_after=7.0) <= 7.5  # Retry-After wins, plus a little jitter
    assert policy.backoff(1, retry_after=10_000) <= policy.max_retry_after + policy.base


def test_5xx_on_a_read_is_retried_with_growing_jittered_waits() -> None:
    clock = FakeClock()
    calls = Calls(clock, _error(503, "APIGW.0613"), _error(502, "APIGW.0601"), _error(500, "DRS.M00004"),
                  _status_ok())
    client, recorded = _client(calls, clock)
    answers = _run(client.status_chunk([JOB]))
    assert answers[JOB].item.status == "INCRE_TRANSFER_STARTED"
    assert len(calls.requests) == 4
    waits = [b - a for a, b in zip(calls.at, calls.at[1:], strict=False)]
    assert all(0 <= w <= 0.5 * 2 ** n + 0.01 for n, w in enumerate(waits))
    assert client.stats["retries"] == 3
    assert client.stats["retry:APIGW.0613"] == 1 and client.stats["retry:DRS.M00004"] == 1
    assert [e.http_status for e in recorded] == [503, 502, 500, 200]
    assert [e.error_code for e in recorded[:3]] == ["APIGW.0613", "APIGW.0601", "DRS.M00004"]
    assert [e.attempt for e in recorded] == [1, 2, 3, 4]


@pytest.mark.parametrize("retry_after", ["7", "http-date"])
def test_429_honours_retry_after_and_halves_the_pace(retry_after: str) -> None:
    clock = FakeClock()
    value = retry_after if retry_after != "http-date" else format_datetime(clock.now() + timedelta(seconds=7),
                                                                            usegmt=True)
    calls = Calls(clock, _error(429, "APIGW.0308", **{"Retry-After": value}), _status_ok())
    pacer = Pacer(clock, rate=100)
    client, _ = _client(calls, clock, pacer=pacer)
    _run(client.status_chunk([JOB]))
    assert 7.0 <= calls.at[1] - calls.at[0] <= 7.5
    # Halved, then a tenth earned back by the success.
    assert pacer.cuts["batch-status"] == 1 and pacer.rate("batch-status") < 100
    assert client.stats["throttled"] == 1 and client.stats["retry:APIGW.0308"] == 1


@pytest.mark.parametrize("code", ["DRS.M01503", "DRS.M01504"])
def test_throttled_or_busy_as_a_whole_request_is_retried(code: str) -> None:
    clock = FakeClock()
    calls = Calls(clock, _error(400, code), _jobs_ok())
    client, _ = _client(calls, clock)
    result = _run(client.stop([StopRequest(JOB)]))
    assert result.items[JOB].status == "success" and len(calls.requests) == 2
    assert client.stats[f"retry:{code}"] == 1


def test_a_rejected_request_is_not_retried_and_keeps_its_code() -> None:
    clock = FakeClock()
    calls = Calls(clock, _error(400, "DRS.M00202"))
    client, recorded = _client(calls, clock)
    with pytest.raises(RequestRejected) as info:
        _run(client.stop([StopRequest(JOB)]))
    assert info.value.code == "DRS.M00202" and info.value.http_status == 400
    assert len(calls.requests) == 1 and client.stats["retries"] == 0
    assert recorded[0].error_code == "DRS.M00202"


def test_destructive_calls_are_retried_only_when_they_never_left() -> None:
    clock = FakeClock()
    # Refused connection: the request never reached the service, so sending it again is safe.
    calls = Calls(clock, httpx.ConnectError("refused"), _jobs_ok())
    client, _ = _client(calls, clock)
    assert _run(client.stop([StopRequest(JOB)])).items[JOB].status == "success"
    assert len(calls.requests) == 2 and client.stats["retry:ConnectError"] == 1
    # Sent, then no answer / a 5xx: it may have taken effect. Never re-sent blindly: the engine reads first.
    for failure in (httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"),
                    _error(500, "DRS.M00004"), _error(503, "APIGW.0613")):
        calls = Calls(clock, failure, _jobs_ok())
        client, _ = _client(calls, clock)
        with pytest.raises(OutcomeUnknown):
            _run(client.delete([issue_permit(JOB, "RELEASE_RESOURCE_COMPLETE")]))
        assert len(calls.requests) == 1


def test_reads_give_up_after_their_attempts_or_their_time_budget() -> None:
    clock = FakeClock()
    calls = Calls(clock, _error(503, "APIGW.0613"))
    client, _ = _client(calls, clock, attempts=4)
    with pytest.raises(ServerError):
        _run(client.status_chunk([JOB]))
    assert len(calls.requests) == 4 and client.stats["gave_up:APIGW.0613"] == 1
    # A long Retry-After uses up the time budget before the attempts run out.
    clock = FakeClock()
    calls = Calls(clock, _error(429, "APIGW.0308", **{"Retry-After": "100"}))
    client = DrsClient(BASE, PROJECT, transport=httpx.MockTransport(calls), clock=clock,
                       retry=RetryPolicy(attempts=50, max_elapsed=250.0, rng=random.Random(1)))
    with pytest.raises(Throttled):
        _run(client.status_chunk([JOB]))
    assert len(calls.requests) == 3 and clock.monotonic() < 400


class VirtualClock:
    """A clock for many concurrent waiters: sleeps overlap, and time jumps to the earliest wake-up once every
    task is waiting (FakeClock moves by each sleep in turn, which would serialise concurrent waits)."""

    def __init__(self) -> None:
        self.t = 0.0
        self._wakeups: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._wakeups, (self.t + seconds, next(self._seq), future))
        await future

    async def run(self, coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(50):  # let everything that can run, run
                await asyncio.sleep(0)
            if self._wakeups and not task.done():
                when, _, future = heapq.heappop(self._wakeups)
                self.t = max(self.t, when)
                future.set_result(None)
        return task.result()


def _storm(pacer_class: type[Pacer], n: int) -> tuple[int, int, float]:
    """`n` concurrent reads against a gateway allowing 5 calls/s (bucket of 5): (requests, 429s, seconds)."""
    clock = VirtualClock()
    bucket = {"tokens": 5.0, "at": 0.0}

    def gateway(request: httpx.Request) -> httpx.Response:
        now = clock.monotonic()
        bucket["tokens"] = min(5.0, bucket["tokens"] + (now - bucket["at"]) * 5.0)
        bucket["at"] = now
        if bucket["tokens"] < 1.0:
            return _error(429, "APIGW.0308", **{"Retry-After": "1"})
        bucket["tokens"] -= 1.0
        return _status_ok()

    calls = Calls(clock, gateway)  # type: ignore[arg-type]
    client, recorded = _client(calls, clock, pacer=pacer_class(clock, rate=180), attempts=10)  # type: ignore[arg-type]

    async def storm() -> list[Any]:
        return await asyncio.gather(*(client.status_chunk([JOB]) for _ in range(n)))

    assert len(asyncio.run(clock.run(storm()))) == n  # every call got through
    return len(recorded), sum(1 for e in recorded if e.http_status == 429), clock.t


class _PauseOnly(Pacer):
    """The naive reaction: hold callers through Retry-After, keep the pace and the slots already booked."""

    def throttled(self, api: str, pause: float) -> None:
        self.pause(api, pause)


def test_a_throttling_storm_slows_the_run_instead_of_amplifying() -> None:
    """100 concurrent reads, a gateway allowing 5 calls/s: the pacer voids the slots booked too fast, halves
    its pace and holds everyone through Retry-After, so the 429s stay a small fraction of the calls and the
    run takes about as long as the gateway's pace allows; the naive reaction sends several times as many."""
    requests, throttled, seconds = _storm(Pacer, 100)
    naive_requests, naive_throttled, _ = _storm(_PauseOnly, 100)
    print(f"storm, 100 calls at 5/s: {requests} requests, {throttled} throttled, {seconds:.1f}s; "
          f"pause only: {naive_requests} requests, {naive_throttled} throttled")
    assert throttled <= 25, f"{throttled} 429s for 100 calls: the storm amplified"
    assert naive_throttled > 4 * throttled
    assert 95 / 5.0 * 0.9 <= seconds <= 95 / 5.0 * 1.5  # about the gateway's own pace


def test_pacer_earns_its_rate_back() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, rate=100)
    pacer.throttled("x", 1.0)
    pacer.throttled("x", 1.0)  # the same burst: one cut
    assert pacer.rate("x") == 50
    clock.advance(2)
    pacer.throttled("x", 1.0)
    assert pacer.rate("x") == 25 and pacer.cuts["x"] == 2
    for _ in range(30):
        pacer.succeeded("x")
    assert pacer.rate("x") == 100


# -- IAM -----------------------------------------------------------------------------------------------------


def _iam(clock: FakeClock, *token_answers: httpx.Response | Exception) -> tuple[Calls, IamPasswordAuth]:
    auth = IamPasswordAuth("alice", "s3cret-pw", "acme", project_id=PROJECT, iam_endpoint="https://iam.example.test")
    token_calls = Calls(clock, *token_answers)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "iam.example.test":
            return token_calls(request)
        return _status_ok() if request.url.path.endswith("batch-status") else _jobs_ok()

    return Calls(clock, route), auth


def _token() -> httpx.Response:
    return httpx.Response(201, headers={"X-Subject-Token": "tok-from-iam"},
                          json={"token": {"expires_at": "2099-01-01T00:00:00Z"}})


def test_iam_refusal_is_an_auth_failure_and_nothing_reaches_drs() -> None:
    clock = FakeClock()
    calls, auth = _iam(clock, httpx.Response(401, json={"error": {"message": "bad password", "code": 401}}))
    client, recorded = _client(calls, clock, auth=auth)
    with pytest.raises(AuthFailure) as info:
        _run(client.stop([StopRequest(JOB)]))
    assert info.value.code == "IAM" and "refused a token (HTTP 401" in info.value.message
    assert "s3cret-pw" not in info.value.message
    assert [r.url.host for r in calls.requests] == ["iam.example.test"]
    assert recorded[0].error_code == "IAM"


@pytest.mark.parametrize("outage", ["503", "connect", "read-timeout"])
def test_iam_unavailable_is_retried_even_for_a_destructive_call(outage: str) -> None:
    clock = FakeClock()
    failure: httpx.Response | Exception = {
        "503": _error(503, "APIGW.0613"), "connect": httpx.ConnectError("no route"),
        "read-timeout": httpx.ReadTimeout("slow IAM")}[outage]
    calls, auth = _iam(clock, failure, _token())
    client, _ = _client(calls, clock, auth=auth)
    # The token request failed, so the delete itself was never sent: retrying is safe (not OutcomeUnknown).
    result = _run(client.delete([issue_permit(JOB, "RELEASE_RESOURCE_COMPLETE")]))
    assert result.items[JOB].status == "success"
    hosts = [r.url.host for r in calls.requests]
    assert hosts == ["iam.example.test", "iam.example.test", "drs.example.test"]
    assert client.stats["retry:IAM"] == 1


def test_iam_down_for_good_surfaces_as_a_transport_failure_naming_iam() -> None:
    clock = FakeClock()
    calls, auth = _iam(clock, httpx.ConnectError("no route"))
    client, _ = _client(calls, clock, auth=auth, attempts=3)
    with pytest.raises(TransportFailure) as info:
        _run(client.status_chunk([JOB]))
    assert not isinstance(info.value, OutcomeUnknown)
    assert info.value.code == "IAM" and "IAM at https://iam.example.test" in info.value.message


# -- fail closed: answers we cannot read ---------------------------------------------------------------------


def test_malformed_batch_jobs_answer_is_malformed_not_success() -> None:
    clock = FakeClock()
    calls = Calls(clock, httpx.Response(202, json={"count": 1, "results": [{"id": JOB, "status": "maybe"}]}))
    client, _ = _client(calls, clock)
    with pytest.raises(MalformedResponse):
        _run(client.stop([StopRequest(JOB)]))


# -- fail closed in the engine: what it cannot read, it does not act on --------------------------------------


class RewriteStatus(httpx.AsyncBaseTransport):
    """Real HTTP to the simulator, with every batch-status answer passed through `rewrite` first."""

    def __init__(self, rewrite: Callable[[bytes], bytes]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/batch-status"):
            return response
        body = await response.aread()
        await response.aclose()
        return httpx.Response(response.status_code, content=self.rewrite(body),
                              headers={"X-Request-Id": response.headers.get("X-Request-Id", "")})

    async def aclose(self) -> None:
        await self.inner.aclose()


def _rewriting(monkeypatch: pytest.MonkeyPatch, rewrite: Callable[[bytes], bytes]) -> None:
    _with_transport(monkeypatch, RewriteStatus(rewrite))


def _with_transport(monkeypatch: pytest.MonkeyPatch, transport: httpx.AsyncBaseTransport) -> None:
    def make_client(conn: api.Connection, settings: Any, clock: Any) -> DrsClient:
        return DrsClient(conn.endpoint, conn.project_id, auth=conn.auth, clock=clock, transport=transport)

    monkeypatch.setattr(api, "make_client", make_client)


class InterceptBatchJobs(httpx.AsyncBaseTransport):
    """Real HTTP to the simulator, except the first `times` batch-jobs calls, which `answer` handles."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response], times: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.answer = answer
        self.left = times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch-jobs") and self.left > 0:
            self.left -= 1
            return self.answer(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_a_delete_that_never_left_is_requeued_not_reconciled(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection refused on every attempt of the client's retries: the engine knows nothing was sent, records
    why, and deletes on a later round; the service saw one delete per task."""
    clock = FakeClock()
    attempts = RetryPolicy().attempts
    _with_transport(monkeypatch, InterceptBatchJobs(_refuse_connection, times=attempts))
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 2, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, sqlite_url(tmp_path), clock=clock, poll_interval=1.0)
        calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert calls == {(j, "delete"): 1 for j in jobs}
    for job in jobs:
        requeued = [r for r in td.store.records(td.run_id) if r.job_id == job and r.trigger == "requeue"]
        assert len(requeued) == 1 and requeued[0].error_code == "ConnectError"
        assert (requeued[0].detail or "").startswith("delete not sent: batch-jobs: cannot connect")
    assert td.summary.extra["client"]["gave_up:ConnectError"] == 1


def test_a_batch_refused_as_a_whole_is_split_and_only_the_culprit_fails(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole batch-jobs call refused (400 DRS.M00202): each task is sent alone; the one the service keeps
    refusing fails with the code, the others proceed (issue 11)."""
    with simulator(profile="fast") as (sim, url):
        culprit, *others = add(sim, 3, status="INCRE_TRANSFER_STARTED")

        def refuse(request: httpx.Request) -> httpx.Response:
            return _error(400, "DRS.M00202")

        class RefuseCulprit(InterceptBatchJobs):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.path.endswith("/batch-jobs") and culprit.encode() in request.content:
                    return refuse(request)
                return await self.inner.handle_async_request(request)

        _with_transport(monkeypatch, RefuseCulprit(refuse, times=0))
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
    assert td.outcomes == {culprit: "failed", **dict.fromkeys(others, "deleted")}
    job = next(j for j in td.summary.jobs if j["job_id"] == culprit)
    assert job["reason"] == "stop refused: batch-jobs: HTTP 400 DRS.M00202 DRS.M00202 says no"
    assert {t.error_code for t in td.store.tasks(td.run_id) if t.job_id == culprit} == {"DRS.M00202"}
    assert not any(j == culprit for j, _ in calls)
    assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] == 1 for j in others)
    splits = [r for r in td.store.records(td.run_id) if r.trigger == "requeue" and "alone" in (r.detail or "")]
    assert {r.job_id for r in splits} == {culprit, *others}


def _edit_item(job_id: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def rewrite(body: bytes) -> bytes:
        doc = json.loads(body)
        for item in doc.get("results", []):
            if item.get("id") == job_id:
                edit(item)
        return json.dumps(doc).encode()

    return rewrite


BAD_BODIES = [
    pytest.param(lambda body: b"\x00\xffnot json at all", id="garbage"),
    pytest.param(lambda body: body[: len(body) // 2], id="truncated"),
    pytest.param(lambda body: b'{"count": 3}', id="no-results"),
    pytest.param(lambda body: b'{"count": 3, "results": null}', id="results-null"),
    pytest.param(lambda body: b"[]", id="array"),
]


def _once(rewrite: Callable[[bytes], bytes], times: int = 1) -> Callable[[bytes], bytes]:
    left = [times]

    def first_only(body: bytes) -> bytes:
        if left[0] > 0:
            left[0] -= 1
            return rewrite(body)
        return body

    return first_only


@pytest.mark.parametrize("rewrite", BAD_BODIES)
def test_one_unreadable_status_answer_is_read_again_and_everything_deletes(
        rewrite: Callable[[bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: one bad batch-status answer never ends a task: it is read again, and every task deletes."""
    _rewriting(monkeypatch, _once(rewrite, times=2))
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        assert not any(sim.violations.values())
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert all(calls[(j, "terminate")] == 1 and calls[(j, "delete")] == 1 for j in jobs)
    assert td.summary.exit_code == 0 and td.store.verify(td.run_id).ok


@pytest.mark.parametrize("rewrite", BAD_BODIES)
def test_status_answers_unreadable_for_good_block_after_the_documented_count_and_nothing_is_deleted(
        rewrite: Callable[[bytes], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _rewriting(monkeypatch, rewrite)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, sqlite_url(tmp_path), clock=FakeClock(), poll_interval=0.05)
        calls = [(c["job_id"], c["delete_type"]) for c in sim.destructive_calls]
    assert td.outcomes == dict.fromkeys(jobs, "blocked")
    for j in td.summary.jobs:
        assert j["reason"].startswith("unreadable answer: batch-status")
        assert f"{MAX_BAD_READS} unreadable answers in a row" in j["reason"]
        # What was last reliably seen, and that this run stopped it (not the stale plan status as if running).
        assert "last reliably seen: INCRE_TRANSFER_STARTED" in j["reason"]
        assert j["reason"].endswith("stopped by this run, not deleted")
    # The stops went out on the plan's reading; after that nothing was readable, so nothing more was sent.
    assert sorted(calls) == sorted((j, "terminate") for j in jobs)
    assert td.summary.exit_code == 3 and td.store.verify(td.run_id).ok


UNKNOWN_EDITS = [
    pytest.param(lambda item: item.update(status="RELEASE_RESOURCE_COMPLETED"), "unknown status "
                 "'RELEASE_RESOURCE_COMPLETED'", id="unknown-status"),
    pytest.param(lambda item: item.pop("status"), "unknown status None", id="missing-status"),
]


@pytest.mark.parametrize(("edit", "reason"), UNKNOWN_EDITS)
def test_an_unknown_status_for_good_blocks_that_task_only(
        edit: Callable[[dict[str, Any]], None], reason: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with simulator(profile="fast") as (sim, url):
        odd, *others = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        _rewriting(monkeypatch, _edit_item(odd, edit))
        td = teardown(sim, url, sqlite_url(tmp_path), clock=FakeClock(), poll_interval=0.05)
        odd_calls = [c["delete_type"] for c in sim.destructive_calls if c["job_id"] == odd]
        assert not any(sim.violations.values())
    assert td.outcomes == {odd: "blocked", **dict.fromkeys(others, "deleted")}
    job = next(j for j in td.summary.jobs if j["job_id"] == odd)
    assert job["reason"].startswith(reason + f"; {MAX_BAD_READS} unreadable answers in a row")
    assert odd_calls == ["terminate"]  # never deleted


@pytest.mark.parametrize(("edit", "reason"), UNKNOWN_EDITS)
def test_an_unknown_status_once_is_read_again(edit: Callable[[dict[str, Any]], None], reason: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        _rewriting(monkeypatch, _once(_edit_item(jobs[0], edit)))
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        assert not any(sim.violations.values())
    assert td.outcomes == dict.fromkeys(jobs, "deleted")


# -- SIGINT / SIGTERM ----------------------------------------------------------------------------------------


def _env(url: str, crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
    env.update({"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT,
                "DRS_TEARDOWN_ENDPOINT": url})
    if crash_at:
        env["DRS_TEARDOWN_CRASH_AT"] = crash_at
    return env


def _run_cli(db: str, url: str, cwd: Path, crash_at: str) -> subprocess.CompletedProcess[str]:
    args = ["--db", db, "run", "--all", "--yes", "--output", "json", "--poll-interval", "0.05"]
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env=_env(url, crash_at), cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_sigterm_finishes_the_step_records_it_exits_130_and_resume_completes(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 4, status="INCRE_TRANSFER_STARTED")
        # SIGTERM right after the stop intents commit: the stops still go out and their outcome is recorded.
        proc = _run_cli(db, url, tmp_path, "after_intent:stop:1:TERM")
        assert proc.returncode == 130, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["exit_code"] == 130 and doc["counts"] == {"pending": 4}
        assert {j["local_state"] for j in doc["jobs"]} == {"releasing"}  # the step finished and was recorded
        assert sorted(c["job_id"] for c in sim.destructive_calls) == sorted(jobs)
        store = Store(db)
        run = store.run(doc["run_id"])
        assert run is not None and run.status == "interrupted"
        assert [r.trigger for r in store.records(run.id)][-1] == "run_interrupted"

        result = cli(["--db", db, "resume", "--output", "json"], env=_env(url))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["counts"] == {"deleted": 4}
        assert Counter(c["delete_type"] for c in sim.destructive_calls) == {"terminate": 4, "delete": 4}
        assert store.verify(run.id).ok
        store.close()


def test_a_signal_while_planning_sends_nothing_and_leaves_a_resumable_run(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        add(sim, 2, status="INCRE_TRANSFER_STARTED")
        proc = _run_cli(db, url, tmp_path, "after_send:list:1:INT")
        assert proc.returncode == 130, proc.stderr
        assert json.loads(proc.stdout)["exit_code"] == 130
        assert "nothing was sent" in proc.stderr
        assert sim.destructive_calls == []
    store = Store(db)
    # The run was recorded before planning (issue 13): interrupted, with no task yet, and resumable.
    (run,) = store.runs()
    assert run.status == "interrupted" and store.tasks(run.id) == []
    store.close()


def test_sigint_while_waiting_on_the_service_exits_at_once(tmp_path: Path) -> None:
    """The loop sleeps until the next poll; a signal wakes it: no waiting out a poll interval."""
    db = sqlite_url(tmp_path)
    with simulator(profile=load_profile("fast").with_overrides(release_seconds=(30.0, 30.0))) as (sim, url):
        add(sim, 2, status="INCRE_TRANSFER_STARTED")
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "--db", db, "run", "--all", "--yes",
                                 "--output", "json", "--poll-interval", "20"], env=_env(url), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(sim.destructive_calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the stop outcomes committed; the loop is asleep until the next poll, 20 s away
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - signalled < 5
        assert json.loads(out)["counts"] == {"pending": 2}


# -- database trouble ----------------------------------------------------------------------------------------


def test_a_locked_database_is_retried_briefly_then_exit_4_and_the_run_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit of the stop outcomes meets a locked database: it is retried, then the command exits 4 with
    nothing of that transaction written; resume reads the tasks back and finishes without re-sending."""
    db = sqlite_url(tmp_path)
    naps: list[float] = []
    real_append = Store._append

    def append(self: Store, session: Any, run_id: str, ctx: Any, events: Any, now: Any) -> None:
        if any(e.trigger == "stop_accepted" for e in events):
            locked = sqlite3.OperationalError("database is locked")
            raise OperationalError("INSERT INTO audit_records", {}, locked)
        real_append(self, session, run_id, ctx, events, now)

    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED")
        with monkeypatch.context() as m:
            m.setattr(Store, "_append", append)
            m.setattr(time, "sleep", naps.append)  # the store's retry pauses, taken instantly
            result = cli(["--db", db, "run", "--all", "--yes", "--output", "json", "--poll-interval", "0.05"],
                         env=_env(url))
        assert result.exit_code == 4, result.output
        assert "database is locked" in json.loads(result.stdout)["error"]
        assert len(naps) >= 3 and sum(naps) < 10  # retried, briefly
        store = Store(db)
        (run,) = store.runs()
        # Nothing half-written: the stop intents are there, the failed transaction left no trace.
        assert {t.state.value for t in store.tasks(run.id)} == {"stopping"}
        assert "stop_accepted" not in {r.trigger for r in store.records(run.id)}
        assert store.verify(run.id).ok

        resumed = cli(["--db", db, "resume", "--output", "json"], env=_env(url))
        assert resumed.exit_code == 0, resumed.output
        assert json.loads(resumed.stdout)["counts"] == {"deleted": 3}
        calls = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
        assert calls == {**{(j, "terminate"): 1 for j in jobs}, **{(j, "delete"): 1 for j in jobs}}
        assert store.verify(run.id).ok
        store.close()


# -- the rough profile end to end ----------------------------------------------------------------------------


def rough_fast() -> Profile:
    """Every fault of `rough` (latency, 5xx, drops before and after effect, throttling, busy items, failed
    releases and creations, 400 on unknown ids), its transitions shortened tenfold so a test takes seconds.
    The wall-time comparison with `calm` uses the real profiles: tests/benchmarks/test_bench_resilience.py."""
    rough = load_profile("rough")
    return rough.with_overrides(create_seconds=(0.3, 0.8), start_seconds=(0.3, 0.8),
                                release_seconds=(0.4, 1.5))


# Trail records that are a retry of some kind: stops (re-terminates and escalations included), re-sends after
# an unknown outcome, requeues (busy, not sent, moved), and the unknown outcomes themselves.
RETRY_TRIGGERS = ("stop", "resend", "redelete", "requeue", "outcome_unknown")


def retry_report(td: Teardown) -> dict[str, Any]:
    """What the faults cost: client retries per fault class, engine counters, the HTTP answers recorded."""
    calls = td.store.api_calls(td.run_id)
    return {
        "client": dict(sorted(td.summary.extra["client"].items())),
        "engine": dict(sorted(td.summary.extra["stats"].items())),
        "http": dict(sorted(Counter(str(c.http_status) for c in calls).items())),
        "errors": dict(sorted(Counter(c.error_code for c in calls if c.error_code).items())),
        "trail": dict(sorted(Counter(r.trigger for r in td.store.records(td.run_id)
                                     if r.trigger in RETRY_TRIGGERS).items())),
        "calls": len(calls),
    }


def test_rough_world_converges_with_zero_violations(tmp_path: Path) -> None:
    with simulator(jobs=40, seed=4, profile=rough_fast()) as (sim, url):
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.1)
        violations = {k: n for k, n in sim.violations.items() if n}
        destructive = Counter((c["job_id"], c["delete_type"]) for c in sim.destructive_calls)
    print("\nrough:", td.summary.counts, json.dumps(retry_report(td), indent=1))
    assert violations == {}, sim.violation_log
    tasks = td.store.tasks(td.run_id)
    allowed = [t for t in tasks if t.planned_action in ("stop_then_delete", "delete", "wait")]
    assert len(allowed) >= 25
    assert [(t.job_id, t.state.value, t.reason) for t in allowed if t.state.value != "deleted"] == []
    others = [t for t in tasks if t not in allowed]
    # Not allowed to be deleted: blocked by the plan, or dual-active children carried by their parent (gone with
    # it, as the completeness check confirms).
    assert all(t.state.value == "blocked" or "torn down with its parent" in (t.reason or "") for t in others)
    assert td.summary.left_behind == []
    deletes = [c for c in td.sim.destructive_calls if c["delete_type"] == "delete"]
    # Every delete followed a fresh deletable reading; the rough world also restarts tasks on its own, so a
    # delete may race a restart landing in the milliseconds after that reading: the service refuses it (the
    # task is requeued and stopped again), it never deletes a task that was not deletable.
    assert all(c["status_before"] in DELETABLE or c["result"] == "failed" for c in deletes), deletes
    assert max(destructive.values()) <= Tuning().terminate_attempts + 3  # bounded: busy retries, re-sends
    assert td.store.verify(td.run_id).ok
