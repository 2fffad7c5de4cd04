"""The completeness check that closes every run: what the run removed (or found gone) is read once more, and
anything the service still shows is reported by id with its status, so exit 0 means the selection is gone.

The finding is recorded in the trail (`completeness_check` for the run, `left_behind` per task) and returned to
the caller; a task the check cannot read counts as left behind (fail closed).

Reading a few thousand tasks at the very end would hold the run's finish for their calls (at 190 calls/s, half a
second per 10,000 tasks), so `EarlyReads` reads tasks once they have been removed for a poll interval, a full
call of 100 at a time, beside the loop (never holding it). A task such a read shows gone needs no second read at
the end; anything else it shows, or a read that fails, leaves the task to the final check, unchanged in its rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from orchestrator.drs.codes import reads_gone
from orchestrator.engine.protocol import EngineLike
from orchestrator.errors import DrsError
from orchestrator.lifecycle import TaskState
from orchestrator.store.repo import Event, Store

SHOULD_BE_GONE = (TaskState.DELETED, TaskState.SKIPPED)
CONFIRM_READS = 3  # reads of a task shown present before it counts as left behind
EARLY_CHUNK = 100  # an early read is one full batch-status call: it never costs more calls than the end would
EARLY_IN_FLIGHT = 4


def _gone(answer: Any) -> bool:
    if answer is None or getattr(answer, "failure", None) is not None:
        return False
    return reads_gone(answer.item.status, answer.item.error_code)


class EarlyReads:
    """Completeness reads during the run: each removed task read once it has been gone a poll interval."""

    def __init__(self, e: EngineLike) -> None:
        self.engine = e
        self.removed: deque[tuple[datetime, str]] = deque()  # (when, job id), oldest first
        self.confirmed: set[str] = set()  # read gone after their removal
        self._reading: set[asyncio.Task[None]] = set()

    def removed_now(self, job_id: str, now: datetime) -> None:
        self.removed.append((now, job_id))

    def tick(self) -> None:
        """Start a read beside the loop for each full call of ripe tasks (a few in flight at most; the client
        paces them with the rest of the run's batch-status calls)."""
        e = self.engine
        self._reading = {r for r in self._reading if not r.done()}
        ripe = e.clock.now() - timedelta(seconds=e.tuning.poll_interval)
        while len(self._reading) < EARLY_IN_FLIGHT and len(self.removed) >= EARLY_CHUNK \
                and self.removed[EARLY_CHUNK - 1][0] <= ripe:
            ids = [self.removed.popleft()[1] for _ in range(EARLY_CHUNK)]
            self._reading.add(asyncio.ensure_future(self._read(ids)))

    async def _read(self, ids: list[str]) -> None:
        try:
            answers = await self.engine.client.batch_status(ids)
        except Exception:
            return
        self.confirmed.update(j for j in ids if _gone(answers.get(j)))

    def cancel(self) -> None:
        for reading in self._reading:
            reading.cancel()

    async def settle(self) -> None:
        """Let the reads in flight finish (their calls are recorded with the run's)."""
        for reading in list(self._reading):
            with contextlib.suppress(Exception):
                await reading


async def _read(e: EngineLike, ids: list[str], state: dict[str, TaskState]) -> list[dict[str, Any]]:
    """One round: the tasks among `ids` the service still shows (or that could not be read)."""
    try:
        answers = await e.client.batch_status(ids)
    except DrsError as exc:
        return [{"job_id": j, "status": None, "reason": f"completeness check could not read it: {exc.message}"}
                for j in ids]
    left = []
    for job_id in ids:
        answer = answers.get(job_id)
        if _gone(answer):
            continue
        if answer is None or getattr(answer, "failure", None) is not None:
            left.append({"job_id": job_id, "status": None, "reason": "completeness check could not read it"})
            continue
        item = answer.item
        if item.error_code:
            why = f"completeness check could not read it: {item.error_code}"
        else:
            done = "deleted" if state[job_id] is TaskState.DELETED else "found gone"
            why = f"still present ({item.status}) although the run {done} it"
        left.append({"job_id": job_id, "status": item.status, "reason": why})
    return left


async def final_check(e: EngineLike) -> list[dict[str, Any]]:
    """Read every task that should be gone; record and return those still present."""
    state = {j: st for j, (st, _) in e.store.job_states(e.run_id).items() if st in SHOULD_BE_GONE}
    if not state:
        return []
    await e.early.settle()
    ids = list(state)
    early = [j for j in ids if j in e.early.confirmed]
    left: list[dict[str, Any]] = []
    unsure = [j for j in ids if j not in e.early.confirmed]
    # A task shown present is read again (a stale or partial answer is no proof) before it counts as left behind.
    for attempt in range(CONFIRM_READS if unsure else 0):
        if attempt:
            await e.clock.sleep(min(e.tuning.max_poll_interval, e.tuning.poll_interval * 2 ** attempt))
        left = await _read(e, unsure, state)
        unsure = [x["job_id"] for x in left]
        if not unsure:
            break
    now = e.clock.now()
    events = [Event(trigger="left_behind", job_id=x["job_id"], from_state=None, to_state=None,
                    remote_status=x["status"], detail=x["reason"]) for x in left]
    during = f" ({len(early)} of them read gone during the run)" if early else ""
    events.append(Event(trigger="completeness_check", detail=f"read {len(ids)} task(s) that should be gone"
                        f"{during}; {len(left)} still present"))
    if e.exchanges:
        e.store.record_exchanges(e.run_id, e.ctx.worker, e.exchanges)
        e.exchanges = []
    e.store.append_events(e.run_id, e.ctx, events, now)
    return left


def left_behind(store: Store, run_id: str) -> list[dict[str, Any]]:
    """What the run's completeness check found still present (from the trail)."""
    return [{"job_id": job_id, "status": status, "reason": detail}
            for job_id, status, detail in store.findings(run_id, "left_behind")]
