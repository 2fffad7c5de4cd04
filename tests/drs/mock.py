"""A scripted MockTransport handler and a client on it, for the DRS-layer unit tests (fake clock, no sleeping)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.wire import Exchange

BASE = "https://drs.example.test"
PROJECT = "0123456789abcdef0123456789abcdef"
JOB = "11111111-2222-4333-8444-555555555555"
Handler = Callable[[httpx.Request], httpx.Response]


def job(n: int) -> str:
    return f"{n:08d}-2222-4333-8444-555555555555"


class Calls:
    """Answers from a script (the last answer repeats), noting each request and when (fake clock) it came."""

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

    def asked(self) -> list[list[str]]:
        """The ids of each request body (batch reads: jobs; batch-jobs: job_id of each item)."""
        out = []
        for r in self.requests:
            body = json.loads(r.content)
            jobs = body.get("jobs", [])
            out.append([j["job_id"] if isinstance(j, dict) else j for j in jobs])
        return out


def status_ok(*ids: str, status: str = "INCRE_TRANSFER_STARTED") -> httpx.Response:
    ids = ids or (JOB,)
    return httpx.Response(200, json={"count": len(ids), "results": [{"id": i, "status": status} for i in ids]},
                          headers={"X-Request-Id": "rid-ok"})


def echo_status(status: str = "INCRE_TRANSFER_STARTED", *, skip: frozenset[str] = frozenset()) -> Handler:
    """Answer every id asked (but those in `skip`) with `status`."""
    def handler(request: httpx.Request) -> httpx.Response:
        ids = [i for i in json.loads(request.content)["jobs"] if i not in skip]
        return status_ok(*ids, status=status) if ids else httpx.Response(200, json={"count": 0, "results": []})
    return handler


def jobs_ok(*ids: str) -> httpx.Response:
    ids = ids or (JOB,)
    return httpx.Response(202, json={"count": len(ids), "results": [{"id": i, "status": "success"} for i in ids]})


def error(status: int, code: str, message: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "error_msg": message or f"{code} says no"},
                          headers=headers)


def make_client(calls: Calls, clock: FakeClock, *, attempts: int = 6, seed: int = 1,
                **kw: Any) -> tuple[DrsClient, list[Exchange]]:
    recorded: list[Exchange] = []
    client = DrsClient(BASE, PROJECT, transport=httpx.MockTransport(calls), clock=clock,
                       retry=RetryPolicy(attempts=attempts, base=0.5, cap=30.0, rng=random.Random(seed)),
                       recorder=recorded.append, **kw)
    return client, recorded
