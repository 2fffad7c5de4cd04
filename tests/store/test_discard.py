"""An empty match records no run (issue 11) while a run is recorded before planning (issue 13): the bare run row
is removed in one transaction, and only while nothing of it is in the trail (the append-only tables untouched)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.engine import Tuning
from orchestrator.store.repo import Store
from orchestrator.usecases import new_context
from orchestrator.usecases.recording import begin_run, discard_run, open_run
from orchestrator.wire import Exchange

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _bare(store: Store) -> str:
    ctx = new_context("tester", ticket=None, reason=None)
    return begin_run(store, ctx, Tuning(), NOW, project_id="p" * 32, endpoint="http://127.0.0.1:1",
                     selection={"name_glob": "legacy-*"}, consent="yes-flag")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 't.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Store(url)
    yield s
    s.close()


def test_a_bare_run_is_verifiable_and_discarded_whole(store: Store) -> None:
    run_id = _bare(store)
    run = store.run(run_id)
    assert run is not None and run.status == "planning" and run.head_seq == 0 and store.records(run_id) == []
    assert store.verify(run_id).ok  # an empty chain at GENESIS(run_id)
    assert discard_run(store, run_id) and store.run(run_id) is None and store.runs() == []
    assert not discard_run(store, run_id)  # once


@pytest.mark.parametrize("what", ["record", "task", "exchange", "finished"])
def test_a_run_with_anything_in_its_trail_is_never_discarded(store: Store, what: str) -> None:
    run_id = _bare(store)
    ctx = new_context("tester", ticket=None, reason=None)
    if what == "record":
        open_run(store, run_id, ctx, NOW, "yes-flag")
    elif what == "task":
        store.add_tasks(run_id, [{"job_id": "a" * 8 + "-0000-4000-8000-" + "0" * 12, "planned_action": "delete"}],
                        ctx, [], NOW)
    elif what == "exchange":
        store.record_exchanges(run_id, ctx.worker, [Exchange(at=NOW, api="list", method="GET", path="/jobs",
                                                             http_status=200, request_id="r", duration_ms=1.0,
                                                             job_ids=(), error_code=None, attempt=1)])
    else:
        store.set_run(run_id, status="finished")
    assert not discard_run(store, run_id)
    assert store.run(run_id) is not None
