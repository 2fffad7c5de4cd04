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


def _early_run(tmp_path: Path, sim: Simulator, url: str) -> Any:
    """300 deletable tasks, and one that never releases (it holds the run open until its --stop-timeout), so the
    check's reads of the 300 can go out during the run."""
    return teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, stop_timeout=3.0)


def test_tasks_removed_during_the_run_are_read_gone_then_and_not_again(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 300, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        (slow,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", db_use_type="migration", never_releases=True)
        td = _early_run(tmp_path, sim, url)
    assert td.outcomes == {**dict.fromkeys(jobs, "deleted"), slow: "timed_out"}
    assert td.summary.left_behind == []
    (check,) = [r for r in td.store.records(td.run_id) if r.trigger == "completeness_check"]
    assert check.detail == "read 300 task(s) that should be gone (300 of them read gone during the run); " \
                           "0 still present"
    # Early reads are full calls of 100: three for the 300 (the deletes needed no status read: the plan's reading
    # was fresh), and none at the end.
    reads = [(c.job_ids or "").split(",") for c in td.store.api_calls(td.run_id) if c.api == "batch-status"]
    removed = [ids for ids in reads if set(ids) <= set(jobs)]
    assert len(removed) == 3 and all(len(ids) == 100 for ids in removed)
    assert sorted(i for ids in removed for i in ids) == sorted(jobs)


def test_a_task_the_service_kept_is_still_caught_when_the_others_were_read_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An early read that shows a removed task present confirms nothing: the final check reads it again (three
    times) and reports it, as it would have without early reads."""
    with simulator(profile="fast") as (sim, url):
        kept, *_ = add(sim, 300, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        add(sim, 1, status="INCRE_TRANSFER_STARTED", db_use_type="migration", never_releases=True)
        _transport(monkeypatch, KeepAlive(sim, kept))
        td = _early_run(tmp_path, sim, url)
    assert [x["job_id"] for x in td.summary.left_behind] == [kept] and td.summary.exit_code == 3
    (check,) = [r for r in td.store.records(td.run_id) if r.trigger == "completeness_check"]
    assert check.detail == "read 300 task(s) that should be gone (299 of them read gone during the run); " \
                           "1 still present"
