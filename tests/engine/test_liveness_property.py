"""Liveness and safety together, through the whole engine: for random sequences of good, malformed, partial, stale
and unknown read answers, transport faults and busy or lost destructive answers, every task the service
eventually lets go of ends `deleted`, and no delete is ever sent unless the service's last answer for that task
was deletable (and the task really was deletable).

The service is a small stateful model behind httpx.MockTransport (narrow and fast), the clock is fake. Faults
come from a finite script (fewer than MAX_BAD_READS of them), after which the service answers well: that is the
promise — fewer bad answers in a row than the documented count never end a task.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.drs.codes import DELETABLE
from orchestrator.drs.pacing import Pacer
from orchestrator.engine import Engine, Tuning
from orchestrator.engine.tuning import MAX_BAD_READS
from orchestrator.planning import Selection, make_plan
from orchestrator.store.repo import Context, Store
from orchestrator.usecases import start_run
from tests.kit import migrated_db

PROJECT = "0123456789abcdef0123456789abcdef"
READ_FAULTS = ["garbage", "truncated", "results-null", "array", "unknown", "missing", "stale", "500", "connect",
               "timeout"]
ACTION_FAULTS = ["busy", "500-applied", "500-not-applied", "connect", "drop-applied"]
START = ["INCRE_TRANSFER_STARTED", "PAUSING", "FULL_TRANSFER_COMPLETE", "CREATING", "RELEASE_RESOURCE_COMPLETE",
         "CREATE_FAILED", "RELEASE_RESOURCE_FAILED", "CHILD_TRANSFER_COMPLETE"]


@dataclass
class Job:
    status: str
    waits: int  # reads before a transitional status moves on
    history: list[str] = field(default_factory=list)

    def read(self) -> str:
        if self.waits > 0:
            self.waits -= 1
        elif self.status == "CREATING":
            self.status = "INCRE_TRANSFER_STARTED"
        elif self.status == "RELEASE_RESOURCE_STARTED":
            self.status = "RELEASE_RESOURCE_COMPLETE"
        elif self.status == "RELEASE_CHILD_TRANSFER_STARTED":
            self.status = "RELEASE_CHILD_TRANSFER_COMPLETE"
        self.history.append(self.status)
        return self.status


@dataclass
class Service:
    jobs: dict[str, Job]
    read_faults: list[str]
    action_faults: list[str]
    last_served: dict[str, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    destructive: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path.endswith("/batch-jobs"):
            return self._act(request, body)
        if request.url.path.endswith("/jobs"):  # the list API (children of selected parents): none here
            return httpx.Response(200, json={"total_record": 0, "jobs": []})
        # The faults hit the engine's polls (batch-status); the plan's detail reads are answered well.
        polls = request.url.path.endswith("/batch-status")
        fault = self.read_faults.pop(0) if self.read_faults and polls else "ok"
        if fault == "500":
            return httpx.Response(500, json={"error_code": "DRS.M00004", "error_msg": "boom"})
        if fault == "connect":
            raise httpx.ConnectError("refused", request=request)
        if fault == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        results = []
        for job_id in body["jobs"]:
            job = self.jobs[job_id]
            stale = fault == "stale" and job.history
            status = job.history[max(0, len(job.history) - 3)] if stale else job.read()
            if status == "DELETED":
                results.append({"id": job_id, "status": "DELETED"})
                self.last_served[job_id] = status
                continue
            self.last_served[job_id] = status
            item: dict[str, Any] = {"id": job_id, "status": status}
            if request.url.path.endswith("/batch-detail"):
                item.update(name=job_id[:8], db_use_type="migration", period_order={})
            results.append(item)
        if fault == "unknown" and results:
            results[0]["status"] = "BRAND_NEW_STATUS"
            self.last_served[results[0]["id"]] = "BRAND_NEW_STATUS"
        if fault == "missing" and len(results) > 1:
            dropped = results.pop()
            self.last_served.pop(dropped["id"], None)
        doc: Any = {"count": len(results), "results": results}
        shapes = {"garbage": b"<html>proxy error</html>", "truncated": json.dumps(doc).encode()[:20],
                  "results-null": b'{"count": 1, "results": null}', "array": b"[]"}
        if fault in shapes:
            for r in results:  # nothing readable was served
                self.last_served.pop(r["id"], None)
            return httpx.Response(200, content=shapes[fault])
        return httpx.Response(200, json=doc)

    def _act(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        fault = self.action_faults.pop(0) if self.action_faults else "ok"
        if fault == "connect":
            raise httpx.ConnectError("refused", request=request)
        applied = fault in ("ok", "busy", "500-applied", "drop-applied")
        results = []
        for job in body["jobs"]:
            job_id, kind = job["job_id"], job["delete_type"]
            self.destructive.append((job_id, kind))
            j = self.jobs[job_id]
            if kind == "delete":
                if self.last_served.get(job_id) not in DELETABLE:
                    self.violations.append(f"delete of {job_id}, last served {self.last_served.get(job_id)}")
                if j.status not in DELETABLE and j.status != "DELETED":
                    self.violations.append(f"delete of {job_id} while {j.status}")
            if fault == "busy":
                results.append({"id": job_id, "status": "failed", "error_code": "DRS.M01504", "error_msg": "busy"})
                continue
            results.append(self._apply(j, job_id, kind) if applied else {"id": job_id, "status": "success"})
        if fault in ("500-applied", "500-not-applied"):
            return httpx.Response(500, json={"error_code": "DRS.M00004", "error_msg": "boom"})
        if fault == "drop-applied":
            raise httpx.RemoteProtocolError("dropped", request=request)
        return httpx.Response(202, json={"count": len(results), "results": results})

    @staticmethod
    def _apply(j: Job, job_id: str, kind: str) -> dict[str, Any]:
        if j.status == "DELETED":
            return {"id": job_id, "status": "failed", "error_code": "DRS.M05004", "error_msg": "deleted"}
        if kind == "delete":
            if j.status not in DELETABLE:
                return {"id": job_id, "status": "failed", "error_code": "DRS.M00304", "error_msg": "status"}
            j.status = "DELETED"
        elif j.status in DELETABLE or j.status in ("CREATING", "RELEASE_RESOURCE_STARTED",
                                                   "RELEASE_CHILD_TRANSFER_STARTED"):
            return {"id": job_id, "status": "failed", "error_code": "DRS.M00304", "error_msg": "status"}
        else:
            j.status = "RELEASE_CHILD_TRANSFER_STARTED" if j.status.startswith("CHILD_") \
                else "RELEASE_RESOURCE_STARTED"
        return {"id": job_id, "status": "success"}




async def _teardown(service: Service, db: str) -> tuple[Store, str]:
    clock = FakeClock()
    client = DrsClient("http://drs.test", PROJECT, transport=httpx.MockTransport(service.handle), clock=clock,
                       pacer=Pacer(clock), retry=RetryPolicy(attempts=2, base=0.1, cap=1.0))
    store = Store(db)
    plan = await make_plan(client, Selection(job_ids=tuple(service.jobs)), endpoint="http://drs.test",
                           now=clock.now())
    ctx = Context(actor={"os_user": "t"}, worker="w1")
    tuning = Tuning(poll_interval=1.0, max_poll_interval=4.0, stop_timeout=3600.0, delete_timeout=3600.0,
                    timeout=7200.0)
    run_id = start_run(store, plan, ctx, tuning, clock.now(), consent="test")
    await asyncio.wait_for(Engine(store, client, ctx, tuning, clock, run_id, fresh=True).run(), timeout=60)
    await client.aclose()
    return store, run_id


@given(n=st.integers(1, 6), data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
def test_every_task_the_service_lets_go_of_ends_deleted(tmp_path: Path, n: int, data: st.DataObject) -> None:
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(n)]
    jobs = {i: Job(data.draw(st.sampled_from(START), label="start"), data.draw(st.integers(0, 3), label="waits"))
            for i in ids}
    service = Service(jobs, data.draw(st.lists(st.sampled_from(READ_FAULTS), max_size=MAX_BAD_READS - 2),
                                      label="read faults"),
                      data.draw(st.lists(st.sampled_from(ACTION_FAULTS), max_size=4), label="action faults"))
    planning_faults = list(service.read_faults)
    try:
        store, run_id = asyncio.run(_teardown(service, migrated_db(tmp_path)))
    except Exception as exc:  # planning reads gave up before any run was recorded: nothing was sent
        from orchestrator.errors import DrsError

        assert isinstance(exc, DrsError), exc
        assert service.destructive == [] and planning_faults
        return
    assert service.violations == []  # safety: no delete without a fresh deletable reading
    outcomes = {t.job_id: t.state.value for t in store.tasks(run_id)}
    assert outcomes == dict.fromkeys(ids, "deleted"), ([(t.job_id[:8], t.state.value, t.reason)
                                                      for t in store.tasks(run_id)], service.destructive)
    assert all(j.status == "DELETED" for j in jobs.values())
    assert store.verify(run_id).ok
    store.close()
