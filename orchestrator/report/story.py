"""What happened in a run, read from its trail: per task, every stop attempt, escalation and error (recovered
or not), its breakpoint and target; for the run, the chain events and the gaps between an interruption and its
resume. Pure: values in, values out; the HTML is drawn from these in `html`, `tables` and `timeline`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.lifecycle import OUTCOME_ORDER, TERMINAL, TRANSITIONS, outcome_of
from orchestrator.report.export import parse_actor
from orchestrator.store.schema import AuditRecord, Run, Task

TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)
RANK: dict[str, int] = {o: i for i, o in enumerate(OUTCOME_ORDER)}  # problems first
ACTION_TRIGGERS = frozenset({"stop", "resend", "delete", "redelete"})

# Codes an operator will meet in a trail, in a few words (reference/drs-api.md §10); the rest show as they came.
CODE_MEANINGS: dict[str, str] = {
    "DRS.M01504": "another operation is in progress on the task: retried later (per item, inside a 202)",
    "DRS.M01503": "operation too frequent: throttled, retried after a pause",
    "APIGW.0308": "the API gateway throttled the call (429): retried after a pause",
    "DRS.M00004": "service abnormal (500/422): retried",
    "DRS.M00289": "the task does not exist",
    "DRS.M05004": "the task was deleted or its resources released",
    "DRS.M05003": "the task does not exist",
    "DRS.M00304": "not callable in the task's current status: read again",
    "DRS.M00308": "a dual-active DR child: only its parent may be called",
    "RemoteProtocolError": "the connection dropped mid-answer: the outcome was read back before anything else",
    "ReadTimeout": "no answer in time: the outcome was read back before anything else",
    "ConnectError": "could not connect: nothing was sent, tried again",
}

# What each trigger's records mean, for the legend under the counts ("delete 196, deleted 172").
TRIGGER_MEANINGS: dict[str, str] = {
    **{t["trigger"]: t["doc"] for t in TRANSITIONS},
    "plan": "the task entered the run with its planned action",
    "stop": "intent: a terminate (or force_terminate) is about to be sent; one record per attempt",
    "delete": "intent: a delete is about to be sent; one record per attempt, re-sent ones included",
    "deleted": "confirmed: the service accepted the delete or reads the task back as deleted",
    "outcome_unknown": "the answer to a stop or delete was lost; the status is read before anything is re-sent",
    "takeover": "a worker took the task over after the lease of its previous holder ran out",
    "handed_back": "a worker over its fair share gave the task back (no request of its outstanding); the next "
                   "holder reads it first",
    "target_failed": "a target of --targets could not be planned; resume plans it again",
    "resume_timed_out": "resume re-opened a timed-out task into the state it timed out in, with a new budget; "
                        "it is read before anything is sent",
}


@dataclass(frozen=True)
class Attempt:
    """One stop or delete sent for a task (its intent record)."""

    at: datetime
    trigger: str  # stop, resend, delete, redelete
    action: str  # terminate, force_terminate, delete
    detail: str
    escalation: bool  # the first force_terminate after plain terminates


@dataclass(frozen=True)
class CodeSeen:
    """An error code in a task's records, and whether the task got past it."""

    code: str
    count: int
    recovered: bool
    meaning: str


@dataclass(frozen=True)
class TaskStory:
    """One task of the run, told from its records."""

    task: Task
    index: int  # the plan's order
    outcome: str
    records: tuple[AuditRecord, ...]
    attempts: tuple[Attempt, ...]
    codes: tuple[CodeSeen, ...]
    ended_at: datetime | None
    breakpoint: str | None
    target: str | None

    @property
    def stops(self) -> int:
        return sum(a.action != "delete" for a in self.attempts)

    @property
    def escalated(self) -> bool:
        return any(a.escalation for a in self.attempts)

    @property
    def rank(self) -> tuple[int, int]:
        return RANK.get(self.outcome, len(RANK)), self.index


@dataclass(frozen=True)
class ChainEvent:
    """A run-level record: started, interrupted, resumed, finished (and any other the engine writes)."""

    seq: int
    at: datetime
    trigger: str
    who: str
    worker: str
    outcome: str
    detail: str
    hash: str


@dataclass(frozen=True)
class Gap:
    """A stretch with no worker on the run: from an interruption (or the last record) to the resume."""

    start: datetime
    end: datetime
    resumed_by: str | None  # None: inferred from the records, no run_resumed record

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class RunStory:
    run: Run
    tasks: tuple[TaskStory, ...]  # problems first
    events: tuple[ChainEvent, ...]
    gaps: tuple[Gap, ...]
    start: datetime
    end: datetime
    triggers: Mapping[str, int]  # task records by trigger

    @property
    def targets(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for t in self.tasks:
            if t.target:
                out[t.target][t.outcome] += 1
        return dict(out)


def tell(run: Run, tasks: Sequence[Task], records: Sequence[AuditRecord]) -> RunStory:
    """The story of a run from its stored rows."""
    start, end = time_range(run, records)
    by_job: dict[str, list[AuditRecord]] = defaultdict(list)
    for r in records:
        if r.job_id is not None:
            by_job[r.job_id].append(r)
    stories = [_task_story(t, i, by_job.get(t.job_id, [])) for i, t in enumerate(tasks)]
    stories.sort(key=lambda s: s.rank)
    events = tuple(_event(r) for r in records if r.job_id is None)
    triggers = Counter(r.trigger for r in records if r.job_id is not None)
    return RunStory(run, tuple(stories), events, tuple(gaps_of(records)), start, end, triggers)


def time_range(run: Run, records: Sequence[AuditRecord]) -> tuple[datetime, datetime]:
    times = [r.at for r in records]
    start = min([run.created_at, *times])
    end = max([run.finished_at or start, *times])
    return start, max(end, start + timedelta(seconds=1))


def _task_story(task: Task, index: int, records: Sequence[AuditRecord]) -> TaskStory:
    outcome = outcome_of(task.state)
    ended_at = next((r.at for r in records if r.to_state in TERMINAL_VALUES), None)
    return TaskStory(task, index, outcome, tuple(records), tuple(attempts_of(records)),
                     tuple(codes_of(records, task, outcome)), ended_at, breakpoint_of(task, records),
                     target_of(task))


def attempts_of(records: Iterable[AuditRecord]) -> list[Attempt]:
    """The intent records of a task: what was sent, in order, escalations marked."""
    out: list[Attempt] = []
    plain_stops = 0
    forced = False
    for r in records:
        if r.trigger not in ACTION_TRIGGERS:
            continue
        detail = r.detail or ""
        if r.trigger in ("delete", "redelete"):
            out.append(Attempt(r.at, r.trigger, "delete", detail, False))
            continue
        force = "force_terminate" in detail and "forbids" not in detail
        escalation = force and not forced and (plain_stops > 0 or "escalat" in detail)
        forced = forced or force
        plain_stops += not force
        out.append(Attempt(r.at, r.trigger, "force_terminate" if force else "terminate", detail, escalation))
    return out


def codes_of(records: Iterable[AuditRecord], task: Task, outcome: str) -> list[CodeSeen]:
    """Every error code on a task's records (and its row), marked recovered when the task ended well anyway."""
    coded = [r.error_code for r in records if r.error_code]
    seen: Counter[str] = Counter(coded)
    if task.error_code and task.error_code not in seen:
        seen[task.error_code] = 1
    ended_well = outcome in ("deleted", "skipped")
    # The code that ended a task badly is not recovered; the ones it got past before are.
    final = None if ended_well else task.error_code or (coded[-1] if coded else None)
    return [CodeSeen(code, n, ended_well or code != final, CODE_MEANINGS.get(code, ""))
            for code, n in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))]


def breakpoint_of(task: Task, records: Sequence[AuditRecord]) -> str | None:
    """ "replication stopped at gtid …, position …" from the task row or the latest record that has one.

    Read liberally (issue 14 is landing beside this): `gtid` / `incre_start_position` attributes, or a
    `breakpoint` mapping with those keys (or `position`)."""
    sources: list[Any] = [task, *reversed(records)]
    for source in sources:
        values = getattr(source, "breakpoint", None)
        values = values if isinstance(values, Mapping) else {}
        gtid = getattr(source, "gtid", None) or values.get("gtid")
        position = (getattr(source, "incre_start_position", None) or values.get("incre_start_position")
                    or values.get("position"))
        if gtid or position:
            parts = [f"gtid {gtid}" if gtid else "", f"position {position}" if position else ""]
            return "replication stopped at " + ", ".join(p for p in parts if p)
    return None


def target_of(task: Task) -> str | None:
    """The task's target (issue 15) as a label: a string as is, a mapping by label, endpoint or project."""
    value = getattr(task, "target", None)
    if not value:
        return None
    if isinstance(value, Mapping):
        label = value.get("label") or value.get("endpoint") or value.get("project_id")
        return str(label) if label else None
    return str(value)


def who_of(actor_text: str | None) -> str:
    actor = parse_actor(actor_text)
    if "raw" in actor:
        return str(actor["raw"])
    return f"{actor.get('os_user', '—')} @ {actor.get('host', '—')}"


def _event(r: AuditRecord) -> ChainEvent:
    return ChainEvent(r.seq, r.at, r.trigger, who_of(r.actor), r.worker, r.outcome or "", r.detail or "", r.hash)


def gaps_of(records: Sequence[AuditRecord]) -> list[Gap]:
    """Stretches with nobody on the run.

    A gap opens at `run_interrupted`, or (a kill leaves no such record) at the last record before a
    `run_resumed`; it closes at `run_resumed`, or without one at the next record after the interruption.
    """
    gaps: list[Gap] = []
    opened: datetime | None = None
    previous: AuditRecord | None = None
    for r in records:
        if r.job_id is None and r.trigger == "run_interrupted":
            opened = r.at
        elif r.job_id is None and r.trigger == "run_resumed":
            start = opened if opened is not None else previous.at if previous is not None else r.at
            if r.at > start:
                gaps.append(Gap(start, r.at, who_of(r.actor)))
            opened = None
        elif opened is not None:
            if r.at > opened:
                gaps.append(Gap(opened, r.at, None))
            opened = None
        previous = r
    return gaps


def cut(start: datetime, end: datetime, gaps: Sequence[Gap]) -> list[tuple[datetime, datetime]]:
    """[start, end] with the gaps taken out: no bar is drawn across a time nobody was working."""
    pieces: list[tuple[datetime, datetime]] = []
    for g in gaps:
        if g.end <= start or g.start >= end:
            continue
        if g.start > start:
            pieces.append((start, g.start))
        start = max(start, g.end)
    if end > start or not pieces:
        pieces.append((start, max(start, end)))
    return pieces
