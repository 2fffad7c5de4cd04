"""The completeness check closes every run: a task the service still shows after the run removed it is reported
by id with its status and the exit code is 3 (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import api
from orchestrator.drs.client import DrsClient
from orchestrator.simulator import Simulator
from tests.kit import add, simulator, sqlite_url, teardown


class KeepAlive(httpx.AsyncBaseTransport):
    """Real HTTP to the simulator; batch-status shows `kept` as still running once the simulator deleted it."""

    def __init__(self, sim: Simulator, kept: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sim, self.kept = sim, kept

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/batch-status") or self.sim.status_of(self.kept) != "DELETED":
            return response
        doc = json.loads(await response.aread())
        await response.aclose()
        for item in doc.get("results", []):
            if item.get("id") == self.kept:
                item["status"] = "INCRE_TRANSFER_STARTED"
        return httpx.Response(response.status_code, content=json.dumps(doc).encode(),
                              headers={"X-Request-Id": response.headers.get("X-Request-Id", "")})

    async def aclose(self) -> None:
        await self.inner.aclose()


def _transport(monkeypatch: pytest.MonkeyPatch, transport: httpx.AsyncBaseTransport) -> None:
    def make_client(conn: api.Connection, settings: Any, clock: Any) -> DrsClient:
        return DrsClient(conn.endpoint, conn.project_id, auth=conn.auth, clock=clock, transport=transport)

    monkeypatch.setattr(api, "make_client", make_client)


def test_a_task_the_service_kept_is_reported_and_the_run_exits_3(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with simulator(profile="fast") as (sim, url):
        kept, *others = add(sim, 3, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        _transport(monkeypatch, KeepAlive(sim, kept))
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
    assert td.outcomes == dict.fromkeys([kept, *others], "deleted")
    assert td.summary.exit_code == 3
    assert td.summary.left_behind == [{"job_id": kept, "status": "INCRE_TRANSFER_STARTED",
                                       "reason": "still present (INCRE_TRANSFER_STARTED) although the run "
                                                 "deleted it"}]
    run = td.store.run(td.run_id)
    assert run is not None and run.exit_code == 3
    triggers = [r.trigger for r in td.store.records(td.run_id)]
    assert triggers.count("left_behind") == 1 and "completeness_check" in triggers
    assert td.store.verify(td.run_id).ok


def test_a_clean_run_passes_the_check_with_one_read(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
    assert td.outcomes == dict.fromkeys(jobs, "deleted") and td.summary.exit_code == 0
    assert td.summary.left_behind == []
    (check,) = [r for r in td.store.records(td.run_id) if r.trigger == "completeness_check"]
    assert check.detail == "read 3 task(s) that should be gone; 0 still present"
