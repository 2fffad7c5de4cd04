"""The guard, end to end through the engine: for any sequence of remote statuses and faults, no delete is
sent unless the last status the service reported for that task was deletable, and nothing leaves a
terminal state. The service is a scripted httpx.MockTransport (narrow and fast); the clock is fake."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.drs.codes import ALL_STATUSES, DELETABLE
from orchestrator.drs.pacing import Pacer
from orchestrator.engine import Engine, Tuning
from orchestrator.lifecycle import TERMINAL
from orchestrator.planning import Selection, make_plan
from orchestrator.store.repo import Context, Store
from orchestrator.usecases import start_run
from tests.kit import migrated_db

PROJECT = "0123456789abcdef0123456789abcdef"
FAULTS = st.sampled_from(["ok", "ok", "ok", "ok", "500", "429", "connect", "timeout", "garbage", "missing"])
ITEM = st.sampled_from(["success", "success", "success", "DRS.M01504", "DRS.M00304", "DRS.M00289", "DRS.M00007"])


@dataclass
class Script:
    """What the fake service will say: per task a status sequence (last one repeats), faults per call."""

    statuses: dict[str, list[str]]
    faults: list[str]
    items: list[str]
    served: dict[str, str | None] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    deletes: int = 0
    call: int = 0

    def next_fault(self) -> str:
        self.call += 1
        return self.faults[self.call % len(self.faults)] if self.faults else "ok"

    def status(self, job_id: str) -> str:
        seq = self.statuses[job_id]
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        fault = self.next_fault()
        if fault == "500":
            return httpx.Response(500, json={"error_code": "DRS.M00004", "error_msg": "boom"})
        if fault == "429":
            return httpx.Response(429, json={"error_code": "APIGW.0308", "error_msg": "throttled"},
                                  headers={"Retry-After": "1"})
        if fault == "connect":
            raise httpx.ConnectError("refused", request=request)
        if fault == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if path.endswith("/batch-jobs"):
            return self._batch_jobs(body, fault)
        if path.endswith("/jobs"):  # the list API (children of selected parents): none here
            return httpx.Response(200, json={"total_record": 0, "jobs": []})
        results = []
        for job_id in body["jobs"]:
            status = self.status(job_id)
            self.served[job_id] = status
            item: dict[str, Any] = {"id": job_id, "status": status}
            if path.endswith("/batch-detail"):
                item.update(name=job_id[:8], db_use_type="sync", period_order={})
            results.append(item)
        if fault == "garbage":
            return httpx.Response(200, content=b"<html>proxy error</html>")
        if fault == "missing":
            return httpx.Response(200, json={"count": len(results), "results": [{"status": "X"}]})
        return httpx.Response(200, json={"count": len(results), "results": results})

    def _batch_jobs(self, body: dict[str, Any], fault: str) -> httpx.Response:
        results = []
        for job in body["jobs"]:
            job_id, kind = job["job_id"], job["delete_type"]
            if kind == "delete":
                self.deletes += 1
                if self.served.get(job_id) not in DELETABLE:
                    self.violations.append(f"delete sent to {job_id} last seen {self.served.get(job_id)}")
            self.items.append(self.items.pop(0))
            outcome = self.items[0]
            if outcome == "success":
                results.append({"id": job_id, "status": "success"})
            else:
                results.append({"id": job_id, "status": "failed", "error_code": outcome, "error_msg": "no"})
        if fault == "garbage":
            return httpx.Response(202, content=b"{truncated")
        return httpx.Response(202, json={"count": len(results), "results": results})




async def _run(script: Script, db: str) -> tuple[Store, str, Engine]:
    clock = FakeClock()
    client = DrsClient("http://drs.test", PROJECT, transport=httpx.MockTransport(script.handle), clock=clock,
                       pacer=Pacer(clock), retry=RetryPolicy(attempts=3, base=0.1, cap=1.0))
    store = Store(db)
    ids = list(script.statuses)
    plan = await make_plan(client, Selection(job_ids=tuple(ids)), endpoint="http://drs.test", now=clock.now())
    ctx = Context(actor={"os_user": "t"}, worker="w1")
    tuning = Tuning(poll_interval=1.0, max_poll_interval=4.0, stop_timeout=120.0, delete_timeout=60.0,
                    timeout=600.0)
    run_id = start_run(store, plan, ctx, tuning, clock.now(), consent="test")
    engine = Engine(store, client, ctx, tuning, clock, run_id, fresh=True)
    await asyncio.wait_for(engine.work(), timeout=60)
    await client.aclose()
    return store, run_id, engine


job_ids = st.lists(st.uuids().map(str), min_size=1, max_size=6, unique=True)


@given(ids=job_ids, data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
def test_no_delete_without_a_deletable_observation(tmp_path: Path, ids: list[str], data: st.DataObject) -> None:
    statuses = {i: data.draw(st.lists(st.sampled_from([*ALL_STATUSES, "BRAND_NEW_STATUS"]), min_size=1,
                                      max_size=8), label=f"statuses {i[:4]}") for i in ids}
    script = Script(statuses=statuses, faults=data.draw(st.lists(FAULTS, max_size=12), label="faults"),
                    items=data.draw(st.lists(ITEM, min_size=1, max_size=6), label="items"))
    try:
        store, run_id, _ = asyncio.run(_run(script, migrated_db(tmp_path)))
    except Exception as exc:  # a fault during planning aborts before anything is written: acceptable
        from orchestrator.errors import DrsError

        assert isinstance(exc, DrsError), exc
        assert script.deletes == 0
        return
    assert script.violations == []
    tasks = store.tasks(run_id)
    assert all(t.state in TERMINAL for t in tasks), [t.state for t in tasks]
    # Nothing leaves a terminal state: after the first terminal record of a task, it has no more records.
    records = store.records(run_id)
    finished: set[str] = set()
    for r in records:
        if r.job_id is None or r.to_state is None:  # run-level events, completeness findings
            continue
        assert r.job_id not in finished, f"{r.job_id} moved after reaching a terminal state: {r.trigger}"
        if r.to_state in {s.value for s in TERMINAL}:
            finished.add(r.job_id)
    assert store.verify(run_id).ok
    store.close()
