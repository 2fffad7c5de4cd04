"""The contract's JSON document for a run: outcomes, counts, per-target figures, and the exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.engine.completeness import left_behind
from orchestrator.engine.feed import unplanned_targets
from orchestrator.errors import EXIT_INCOMPLETE, EXIT_OK
from orchestrator.lifecycle import OUTCOMES, TaskState, exit_code_for, outcome_of
from orchestrator.store.repo import Store

NOT_FOUND = "not found"
EARLIER_RUNS_LOOKED_AT = 1000


@dataclass
class RunSummary:
    """The contract's JSON document."""

    run_id: str
    exit_code: int
    counts: dict[str, int]
    jobs: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    left_behind: list[dict[str, Any]] = field(default_factory=list)  # still present at the final check

    def to_json(self) -> dict[str, Any]:
        doc = {"run_id": self.run_id, "exit_code": self.exit_code, "counts": self.counts, "jobs": self.jobs,
               "left_behind": self.left_behind}
        if self.targets:
            doc["targets"] = self.targets
        return doc


def _ordered(counts: Counter[str]) -> dict[str, int]:
    return {k: counts[k] for k in OUTCOMES if counts[k]}


def deleted_earlier(store: Store, run_id: str, job_ids: set[str]) -> dict[str, str]:
    """job id -> the earlier run of this store that recorded its deletion."""
    found: dict[str, str] = {}
    for run in store.runs(limit=EARLIER_RUNS_LOOKED_AT):
        if run.id == run_id or not job_ids - found.keys():
            continue
        for t in store.tasks(run.id):
            if t.job_id in job_ids and t.job_id not in found and t.state is TaskState.DELETED:
                found[t.job_id] = run.id
    return found


def summarize(store: Store, run_id: str, *, missing_ok: bool | None = None) -> RunSummary:
    """Outcomes of every task of the run, and the exit code: an explicit id that is not found is a problem
    (exit 3) unless --missing-ok was given or this store recorded its deletion in an earlier run."""
    run = store.run(run_id)
    options = run.options if run is not None else {}
    if missing_ok is None:
        missing_ok = bool(options.get("missing_ok"))
    label_of = targets_of(run.selection if run is not None else {})
    tasks = store.task_outcomes(run_id)
    not_found = {t.job_id for t in tasks if t.state is TaskState.SKIPPED and (t.reason or "").startswith(NOT_FOUND)}
    earlier = deleted_earlier(store, run_id, not_found) if not_found and not missing_ok else {}
    jobs: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    per_target: dict[str, Counter[str]] = {}
    missing_problem = False
    for t in tasks:
        outcome = outcome_of(t.state)
        counts[outcome] += 1
        reason = t.reason
        if t.job_id in not_found:
            if t.job_id in earlier:
                reason = f"{reason}; deleted in an earlier run {earlier[t.job_id]}"
            elif not missing_ok:
                missing_problem = True
        job = {"job_id": t.job_id, "outcome": outcome, "local_state": t.state.value,
               "remote_status": t.last_status, "reason": reason, "name": t.name}
        if t.gtid or t.incre_start_position:  # --record-breakpoint: where replication stopped
            job["breakpoint"] = {"gtid": t.gtid, "incre_start_position": t.incre_start_position}
        label = t.target or label_of.get(t.job_id)
        if label_of or label:
            job["target"] = label
            per_target.setdefault(label or "", Counter())[outcome] += 1
        jobs.append(job)
    ordered = _ordered(counts)
    code = exit_code_for(ordered)
    left = left_behind(store, run_id)
    if (missing_problem or left) and code == EXIT_OK:
        code = EXIT_INCOMPLETE
    unplanned = unplanned_targets(options)
    if unplanned and code == EXIT_OK:
        code = EXIT_INCOMPLETE  # a target could not be planned: its tasks are not done
    targets = [{**meta, "counts": _ordered(per_target.get(meta["label"], Counter())),
                **({"error": unplanned[meta["label"]]} if meta["label"] in unplanned else {})}
               for meta in _target_meta(run.selection if run is not None else {})]
    return RunSummary(run_id, code, ordered, jobs, targets=targets, left_behind=left)


def targets_of(selection: dict[str, Any]) -> dict[str, str]:
    """job id -> target label, from what a run over several targets recorded."""
    out: dict[str, str] = {}
    for t in selection.get("targets") or ():
        for job_id in t.get("job_ids") or ():
            out[job_id] = t["label"]
    return out


def _target_meta(selection: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"label": t["label"], "endpoint": t.get("endpoint_url") or t.get("endpoint"),
             "project_id": t["project_id"]} for t in selection.get("targets") or ()]
