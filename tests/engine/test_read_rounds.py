"""A round of reads may skip the younger waiters when the oldest did not move ("they will not have either"), but
never tasks that are read to be acted on: 250 deletable tasks whose plan readings went stale are all read again
in one round and deleted, not 100 a round (which trickled a 50,000-task run's deletes out over many minutes)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import httpx

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.drs.pacing import Pacer
from orchestrator.engine import Engine, Tuning
from orchestrator.planning import Selection, make_plan
from orchestrator.store.repo import Context, Store
from orchestrator.usecases import start_run
from tests.engine.test_liveness_property import PROJECT, Job, Service
from tests.kit import migrated_db


def test_stale_deletable_tasks_are_all_read_again_in_one_round_and_deleted(tmp_path: Path) -> None:
    jobs = {str(uuid.uuid4()): Job("RELEASE_RESOURCE_COMPLETE", 0) for _ in range(250)}
    service = Service(jobs, [], [])
    calls: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        calls[request.url.path.rsplit("/", 1)[-1]] += 1
        return service.handle(request)

    async def go() -> Engine:
        clock = FakeClock()
        client = DrsClient("http://drs.test", PROJECT, transport=httpx.MockTransport(handle), clock=clock,
                           pacer=Pacer(clock), retry=RetryPolicy(attempts=2, base=0.1, cap=1.0))
        db = migrated_db(tmp_path)
        store = Store(db)
        plan = await make_plan(client, Selection(job_ids=tuple(jobs)), endpoint="http://drs.test", now=clock.now())
        ctx = Context(actor={"os_user": "t"}, worker="w1")
        tuning = Tuning(poll_interval=1.0, max_poll_interval=30.0, timeout=7200.0)
        run_id = start_run(store, plan, ctx, tuning, clock.now(), consent="test")
        # As a resumed run finds them: released (deletable) half a minute ago; every delete needs a fresh reading.
        with sqlite3.connect(db.removeprefix("sqlite:///")) as raw:
            (stored,) = raw.execute("SELECT DISTINCT state FROM tasks").fetchone()
            raw.execute("UPDATE tasks SET state = ?", ("DELETABLE" if stored.isupper() else "deletable",))
        clock.advance(30)
        calls.clear()
        engine = Engine(store, client, ctx, tuning, clock, run_id, fresh=False)
        await asyncio.wait_for(engine.run(), timeout=60)
        await client.aclose()
        return engine

    engine = asyncio.run(go())
    assert sorted(k for _, k in service.destructive) == ["delete"] * 250 and service.violations == []
    assert engine.stats["polls_skipped"] == 0
    # One round of fresh readings (three status calls of 100, 100, 50) and the deletes; then the final check.
    assert calls["batch-status"] <= 3 + 3, calls
