"""The client against the simulator over loopback, through a transport that spoils answers the way a hostile
service would: every read still converges, and a teardown deletes everything with at most two destructive calls
a task (issue 12: one bad read never ends a task)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import api
from orchestrator.config import Settings
from orchestrator.drs.client import DrsClient, RetryPolicy
from tests.kit import PROJECT, TOKEN, add, simulator, sqlite_url, teardown


class Spoiler(httpx.AsyncBaseTransport):
    """Real HTTP to the simulator; every other batch-status / batch-detail answer is spoiled, in turn: not JSON,
    truncated, results null, an array, half the ids left out, or a 400 listing only one id."""

    SHAPES = ("partial", "only-one", "garbage", "truncated", "null", "array")

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.spoiled: Counter[str] = Counter()
        self.reads = 0
        self.turn = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        path = request.url.path
        if not path.endswith(("/batch-status", "/batch-detail")):
            return response
        self.reads += 1
        if self.reads % 2 == 0:
            return response
        body = await response.aread()
        await response.aclose()
        payload = json.loads(body)
        results = payload.get("results") or []
        shape = self.SHAPES[self.turn % len(self.SHAPES)]
        if shape in ("partial", "only-one") and len(results) < 2:
            shape = "garbage"  # this shape needs two ids or more: it waits for the next read that has them
        else:
            self.turn += 1
        self.spoiled[shape] += 1
        status = response.status_code
        if shape == "garbage":
            content = b"<html>502 Bad Gateway</html>"
        elif shape == "truncated":
            content = body[: len(body) // 2]
        elif shape == "null":
            content = json.dumps({"count": payload.get("count"), "results": None}).encode()
        elif shape == "array":
            content = json.dumps(results).encode()
        elif shape == "partial":
            kept = results[: len(results) // 2]
            content = json.dumps({"count": len(kept), "results": kept}).encode()
        else:
            status, content = 400, json.dumps({"count": 1, "results": results[:1]}).encode()
        return httpx.Response(status, content=content, headers={"X-Request-Id": "spoiled"})

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_every_spoiled_read_is_read_again_and_answers_every_id() -> None:
    spoiler = Spoiler()
    with simulator(profile="fast") as (sim, url):
        ids = add(sim, 25, status="INCRE_TRANSFER_STARTED")

        async def read() -> tuple[dict[str, Any], dict[str, Any]]:
            async with DrsClient(url, PROJECT, auth=api.connect(Settings(endpoint=url, project_id=PROJECT),
                                                                {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}).auth,
                                 transport=spoiler, retry=RetryPolicy(base=0.01, cap=0.05)) as client:
                for _ in range(3):
                    status, detail = await client.batch_status(ids), await client.batch_detail(ids)
                return status, detail

        status, detail = asyncio.run(read())
    assert set(status) == set(ids) == set(detail)
    assert all(a.ok and a.item.status == "INCRE_TRANSFER_STARTED" for a in status.values())
    assert all(a.ok and a.item.status == "INCRE_TRANSFER_STARTED" for a in detail.values())
    assert set(spoiler.spoiled) == set(Spoiler.SHAPES)


def test_a_teardown_through_spoiled_reads_deletes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spoiler = Spoiler()

    def make_client(conn: api.Connection, settings: Any, clock: Any) -> DrsClient:
        return DrsClient(conn.endpoint, conn.project_id, auth=conn.auth, clock=clock, transport=spoiler,
                         retry=RetryPolicy(base=0.01, cap=0.05))

    monkeypatch.setattr(api, "make_client", make_client)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 12, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
        per_task = Counter(c["job_id"] for c in sim.destructive_calls)
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert max(per_task.values()) <= 2
    assert {"partial", "only-one"} <= set(spoiler.spoiled)
