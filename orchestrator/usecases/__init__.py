"""The use cases: what the CLI, `demo`, `worker`, the tests and a Python runbook call.

select -> plan -> (consent) -> record (with the actor Context) -> execute -> summarise, with the safety rails
(--max-targets, plan drift, consent, overlap with an unfinished run, one owner per run) on every path.
"""

from orchestrator.usecases.connection import (
    Connection,
    connect,
    connect_targets,
    make_client,
    settings_for_run,
    settings_for_target,
    tuning_for_run,
    tuning_from,
)
from orchestrator.usecases.context import actor_info, new_context, new_worker_id
from orchestrator.usecases.pipeline import can_pipeline, pipelined
from orchestrator.usecases.rails import check_drift, check_max_targets, check_overlap, own_run, refused
from orchestrator.usecases.recording import add_plan, begin_run, records_before_planning, start_run
from orchestrator.usecases.resume import Resumption, find_run, pick_run, prepare_resume, timed_out_ids
from orchestrator.usecases.summary import RunSummary, summarize
from orchestrator.usecases.teardown import (
    RunPlan,
    TargetPlan,
    Teardown,
    execute,
    execute_run,
    plan_targets,
    recorded_targets,
)
from orchestrator.usecases.worker import WorkerResult, work_runs

__all__ = [
    "Connection",
    "Resumption",
    "RunPlan",
    "RunSummary",
    "TargetPlan",
    "Teardown",
    "WorkerResult",
    "actor_info",
    "add_plan",
    "begin_run",
    "can_pipeline",
    "check_drift",
    "check_max_targets",
    "check_overlap",
    "connect",
    "connect_targets",
    "execute",
    "execute_run",
    "find_run",
    "make_client",
    "new_context",
    "new_worker_id",
    "own_run",
    "pick_run",
    "pipelined",
    "plan_targets",
    "prepare_resume",
    "recorded_targets",
    "records_before_planning",
    "refused",
    "settings_for_run",
    "settings_for_target",
    "start_run",
    "summarize",
    "timed_out_ids",
    "tuning_for_run",
    "tuning_from",
    "work_runs",
]
