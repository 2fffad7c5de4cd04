"""The plan policy, one task at a time, from a detail record (no I/O)."""

from __future__ import annotations

import pytest

from orchestrator.drs.codes import ALL_STATUSES, DELETABLE, WAIT
from orchestrator.drs.models import JobDetail
from orchestrator.errors import SelectionError
from orchestrator.planning import Action, Plan, PlanItem, Selection, decide, drift, load_plan, parse_job_ids, parse_tag

JOB = "9a470239-2308-4bb5-a6bc-1040402f0b21"
PARENT = "11111111-2222-4333-8444-555555555555"


def detail(**kw: object) -> JobDetail:
    return JobDetail.model_validate({"id": JOB, "name": "n", "status": "INCRE_TRANSFER_STARTED", **kw})


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_status_has_a_decision(status: str) -> None:
    item = decide(detail(status=status), {}, {JOB})
    if status in DELETABLE:
        assert item.action is Action.DELETE
    elif status == "DELETED":
        assert item.action is Action.SKIP
    elif status in WAIT:
        assert item.action is Action.WAIT
    else:
        assert item.action is Action.STOP_THEN_DELETE
    assert item.reason


def test_unknown_status_blocks() -> None:
    item = decide(detail(status="QUANTUM_FLUX"), {}, {JOB})
    assert item.action is Action.BLOCK and "QUANTUM_FLUX" in item.reason


def test_not_found_skips_and_other_errors_block() -> None:
    assert decide(detail(status=None, error_code="DRS.M00289"), {}, {JOB}).action is Action.SKIP
    assert decide(detail(status=None, error_code="DRS.M05004"), {}, {JOB}).action is Action.SKIP
    assert decide(detail(status=None, error_code="DRS.M00004"), {}, {JOB}).action is Action.BLOCK


def test_yearly_monthly_blocks_unless_releasing_or_deletable() -> None:
    order = {"order_id": "CS123", "status": "COMPLETED"}
    assert decide(detail(period_order=order), {}, {JOB}).action is Action.BLOCK
    assert decide(detail(period_order=order, status="RELEASE_RESOURCE_STARTED"), {}, {JOB}).action is Action.WAIT
    assert decide(detail(period_order=order, status="RELEASE_RESOURCE_COMPLETE"), {}, {JOB}).action is Action.DELETE
    assert decide(detail(period_order={}), {}, {JOB}).action is Action.STOP_THEN_DELETE  # pay-per-use


def test_dual_active_child() -> None:
    parent = JobDetail.model_validate({"id": PARENT, "status": "INCRE_TRANSFER_STARTED", "multi_write": True})
    child = detail(parent_id=PARENT)
    assert decide(child, {PARENT: parent}, {JOB}).action is Action.BLOCK
    assert PARENT in decide(child, {PARENT: parent}, {JOB}).reason
    assert decide(child, {PARENT: parent}, {JOB, PARENT}).action is Action.SKIP
    # A re-edit child (parent without multi_write) is a task like any other.
    plain_parent = JobDetail.model_validate({"id": PARENT, "status": "INCRE_TRANSFER_STARTED"})
    assert decide(child, {PARENT: plain_parent}, {JOB}).action is Action.STOP_THEN_DELETE


def test_job_id_parsing_names_the_line() -> None:
    assert parse_job_ids([JOB, f"  {JOB}  # dup", "", "# only a comment"]) == [JOB]
    with pytest.raises(SelectionError, match="argument 2"):
        parse_job_ids([JOB, "nope"])
    with pytest.raises(SelectionError, match=r"jobs\.txt line 3"):
        parse_job_ids(["# c", JOB, "x y"], source="jobs.txt")
    assert parse_tag("env=prod") == ("env", "prod")
    with pytest.raises(SelectionError, match=r"KEY=VALUE"):
        parse_tag("envprod")


def test_selection_validation() -> None:
    with pytest.raises(SelectionError, match="nothing selected"):
        Selection().validate()
    with pytest.raises(SelectionError, match="--db-use-type"):
        Selection(all=True, db_use_type="bogus").validate()


def test_plan_round_trip_hash_and_drift() -> None:
    from datetime import UTC, datetime

    items = (PlanItem(JOB, Action.STOP_THEN_DELETE, "r", status="PAUSING"),
             PlanItem(PARENT, Action.DELETE, "r", status="CREATE_FAILED"))
    plan = Plan("p" * 32, "http://x", Selection(job_ids=(JOB, PARENT)), items, datetime.now(UTC))
    loaded = load_plan(plan.to_json(), "plan.json")
    assert loaded.hash == plan.hash and loaded.items == plan.items and loaded.selection == plan.selection
    assert drift(plan, loaded) == []
    moved = Plan(plan.project_id, plan.endpoint, plan.selection,
                 (PlanItem(JOB, Action.DELETE, "r", status="RELEASE_RESOURCE_COMPLETE"), items[1]), plan.created_at)
    assert any(JOB in d for d in drift(plan, moved))
    # A status change that keeps the action is not drift.
    same = Plan(plan.project_id, plan.endpoint, plan.selection,
                (PlanItem(JOB, Action.STOP_THEN_DELETE, "r", status="INCRE_TRANSFER_STARTED"), items[1]),
                plan.created_at)
    assert drift(plan, same) == []
    doc = plan.to_json()
    doc["items"][0]["action"] = "delete"
    with pytest.raises(SelectionError, match="hash"):
        load_plan(doc, "plan.json")
