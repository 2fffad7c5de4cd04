"""Reading runs, tasks and the trail; recomputing the chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from orchestrator.errors import StoreError
from orchestrator.lifecycle import ACTIVE, REOPENABLE, TaskState
from orchestrator.store import audit
from orchestrator.store.schema import ApiCall, AuditRecord, Run, Task
from orchestrator.store.sessions import UNFINISHED, StoreCore, retrying

_STATES = frozenset(s.value for s in TaskState)


class Reads(StoreCore):
    """Queries; none of them writes."""

    @retrying
    def run(self, run_id: str) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    @retrying
    def find_run(self, prefix: str) -> Run | None:
        """A run by id or unique id prefix."""
        with self.session() as s:
            rows = list(s.execute(select(Run).where(Run.id.startswith(prefix, autoescape=True)).limit(2)).scalars())
            return rows[0] if len(rows) == 1 else None

    @retrying
    def runs(self, limit: int = 50) -> list[Run]:
        with self.session() as s:
            return list(s.execute(select(Run).order_by(Run.created_at.desc()).limit(limit)).scalars())

    @retrying
    def run_count(self) -> int:
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(Run)).scalar_one())

    @retrying
    def unfinished_runs(self) -> list[Run]:
        """Runs not finished (planning, running, interrupted), newest first, as recorded (see run_status)."""
        with self.session() as s:
            return list(s.execute(select(Run).where(Run.status.in_(UNFINISHED))
                                  .order_by(Run.created_at.desc())).scalars())

    @retrying
    def reopenable_runs(self, limit: int = 20) -> list[Run]:
        """Finished runs with a task that ended `timed_out` (resumable: `resume` re-opens it), newest first, as
        long as a later run of this store has not taken up every such task since (a run superseded that way
        has nothing left to resume)."""
        with self.session() as s:
            runs = list(s.execute(select(Run).where(
                Run.status == "finished",
                Run.id.in_(select(Task.run_id).where(Task.state.in_(REOPENABLE))))
                .order_by(Run.created_at.desc()).limit(limit)).scalars())
            out = []
            for run in runs:
                timed_out = set(s.execute(select(Task.job_id).where(Task.run_id == run.id,
                                                                    Task.state.in_(REOPENABLE))).scalars())
                later = set(s.execute(select(Task.job_id).join(Run, Task.run_id == Run.id).where(
                    Run.created_at > run.created_at, Task.job_id.in_(sorted(timed_out)[:500]))).scalars())
                if timed_out - later:
                    out.append(run)
            return out

    @retrying
    def timed_out_in(self, run_id: str) -> dict[str, TaskState]:
        """job id -> the state each task of the run last timed out in (the source of its last `time_out`
        record): what `resume_timed_out` restores."""
        with self.session() as s:
            rows = s.execute(select(AuditRecord.job_id, AuditRecord.from_state)
                             .where(AuditRecord.run_id == run_id, AuditRecord.trigger == "time_out")
                             .order_by(AuditRecord.seq, AuditRecord.id))
            out: dict[str, TaskState] = {}
            for job_id, state in rows:
                if job_id is not None and state in _STATES:
                    out[job_id] = TaskState(state)
            return out

    @retrying
    def unfinished_runs_overlapping(self, job_ids: Sequence[str], project_id: str | None) -> list[Run]:
        """Unfinished runs holding a task with one of these ids (in that project, when given), newest first.

        What a new run whose tasks overlap them must be refused for. A run still planning is found only by the
        tasks it has added so far.
        """
        found: dict[str, Run] = {}
        ids = sorted(set(job_ids))
        with self.session() as s:
            for i in range(0, len(ids), 500):
                holding = (select(Task.run_id).join(Run, Task.run_id == Run.id)
                           .where(Run.status.in_(UNFINISHED), Task.job_id.in_(ids[i : i + 500])))
                if project_id is not None:
                    holding = holding.where(func.coalesce(Task.project_id, Run.project_id) == project_id)
                for run in s.execute(select(Run).where(Run.id.in_(holding))).scalars():
                    found[run.id] = run
        return sorted(found.values(), key=lambda r: r.created_at, reverse=True)

    @retrying
    def tasks(self, run_id: str) -> list[Task]:
        with self.session() as s:
            return list(s.execute(select(Task).where(Task.run_id == run_id).order_by(Task.id)).scalars())

    @retrying
    def task_outcomes(self, run_id: str) -> list[Any]:
        """What a run's summary shows of each task (job id, state, last status, reason, name, breakpoint,
        target), in plan order: plain rows, no ORM object per task (a 10,000-task summary in a tenth the time)."""
        with self.session() as s:
            return list(s.execute(select(Task.job_id, Task.state, Task.last_status, Task.reason, Task.name,
                                         Task.gtid, Task.incre_start_position, Task.target)
                                  .where(Task.run_id == run_id).order_by(Task.id)))

    @retrying
    def state_counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's tasks are in each local state (every worker's)."""
        with self.session() as s:
            rows = s.execute(select(Task.state, func.count()).where(Task.run_id == run_id)
                             .group_by(Task.state))
            return {state.value: int(n) for state, n in rows}

    @retrying
    def active_count(self, run_id: str) -> int:
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(Task)
                                 .where(Task.run_id == run_id, Task.state.in_(ACTIVE))).scalar_one())

    @retrying
    def job_states(self, run_id: str) -> dict[str, tuple[TaskState, str | None]]:
        """job id -> (local state, target) of every task of the run: two columns, no ORM object per row."""
        with self.session() as s:
            rows = s.execute(select(Task.job_id, Task.state, Task.target).where(Task.run_id == run_id))
            return {job_id: (state, target) for job_id, state, target in rows}

    @retrying
    def records(self, run_id: str) -> list[AuditRecord]:
        with self.session() as s:
            return list(s.execute(select(AuditRecord).where(AuditRecord.run_id == run_id)
                                  .order_by(AuditRecord.seq, AuditRecord.id)).scalars())

    @retrying
    def findings(self, run_id: str, trigger: str) -> list[tuple[str | None, str | None, str | None]]:
        """(job_id, remote_status, detail) of the run's records with this trigger, in order — without loading
        the whole trail (the completeness check's `left_behind` findings)."""
        with self.session() as s:
            rows = s.execute(select(AuditRecord.job_id, AuditRecord.remote_status, AuditRecord.detail)
                             .where(AuditRecord.run_id == run_id, AuditRecord.trigger == trigger)
                             .order_by(AuditRecord.seq, AuditRecord.id))
            return [(r[0], r[1], r[2]) for r in rows]

    @retrying
    def api_calls(self, run_id: str) -> list[ApiCall]:
        with self.session() as s:
            return list(s.execute(select(ApiCall).where(ApiCall.run_id == run_id).order_by(ApiCall.id)).scalars())

    def verify(self, run_id: str) -> audit.Verification:
        """Recompute the run's chain from the stored records."""
        run = self.run(run_id)
        if run is None:
            raise StoreError(f"no run {run_id}")
        return audit.verify_chain(run_id, self._record_rows(run_id), run.head_seq, run.head_hash)

    @retrying
    def _record_rows(self, run_id: str) -> list[dict[str, Any]]:
        # Plain rows, not ORM objects: a chain of a hundred thousand records is verified in seconds.
        table = AuditRecord.__table__
        names = (*audit.CHAIN_FIELDS, *audit.OPTIONAL_FIELDS, "hash")
        with self.session() as s:
            result = s.execute(select(*(table.c[n] for n in names)).where(table.c.run_id == run_id)
                               .order_by(table.c.seq, table.c.id))
            return [dict(zip(names, row, strict=True)) for row in result]

    def verify_all(self) -> list[audit.Verification]:
        """Every run's chain, newest run first. Empty means there is nothing to verify, which is not "ok": a
        caller must say so (a deleted or replaced database looks exactly like this)."""
        return [self.verify(r.id) for r in self.runs(limit=1_000_000)]
