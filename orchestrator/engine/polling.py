"""Reading tasks' remote statuses for the loop: batched, oldest waiters first, cohorts that have not moved skipped."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from orchestrator import faultpoints
from orchestrator.engine.decide import Decision, Reading, Tracked, on_bad_read, on_breakpoint, on_reading, poll_interval
from orchestrator.engine.protocol import EngineLike
from orchestrator.errors import AuthFailure, DrsError, EngineAbort
from orchestrator.lifecycle import TERMINAL, TaskState

STATUS_CHUNK = 100  # batch-status: ≤100 ids a call (a page holds at most 100)
DETAIL_CHUNK = 10  # batch-detail: Huawei recommends at most 10 ids a call
BREAKPOINT_READS = 3  # unreadable breakpoint reads before the delete goes on without it (recorded so)


class Reader:
    """The loop's reads: status for most, detail (status and period_order) after a refusal."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine

    async def observe(self, due: list[Tracked]) -> None:
        e = self.engine
        # Never-moved tasks (since None) first; a None cannot be compared with a datetime.
        due.sort(key=lambda t: (t.since is not None, t.since.timestamp() if t.since else 0.0, t.job_id))
        details = [t for t in due if t.detail_read]
        statuses = [t for t in due if not t.detail_read]
        chunks: list[tuple[bool, list[Tracked]]] = [(True, details[i : i + DETAIL_CHUNK])
                                                    for i in range(0, len(details), DETAIL_CHUNK)]
        first, rest = statuses[:STATUS_CHUNK], statuses[STATUS_CHUNK:]
        if first:
            chunks.append((False, first))
        changed = await self._read(chunks)
        if not rest:
            return
        # Only waiters (releasing) may skip a round: the others are read to be acted on (a deletable task needs
        # a fresh reading for its delete; skipping it trickled deletes out 100 a round at 50,000 tasks).
        if changed or any(t.state is not TaskState.RELEASING for t in rest):
            await self._read([(False, rest[i : i + STATUS_CHUNK]) for i in range(0, len(rest), STATUS_CHUNK)])
            return
        # The oldest waiters have not moved: the younger ones will not have either. Skip a round.
        now = e.clock.now()
        for t in rest:
            t.unchanged_polls += 1
            waited = (now - t.phase_started).total_seconds() if t.phase_started is not None else None
            t.next_check = now + timedelta(seconds=poll_interval(e.tuning, t.unchanged_polls, waited))
        e.stats["polls_skipped"] += len(rest)

    async def breakpoints(self, tasks: list[Tracked]) -> None:
        """--record-breakpoint: read each released task's detail once, before its delete, for gtid and position."""
        e = self.engine
        chunks = [tasks[i : i + DETAIL_CHUNK] for i in range(0, len(tasks), DETAIL_CHUNK)]
        results = await asyncio.gather(*(e.client.batch_detail([t.job_id for t in c]) for c in chunks),
                                       return_exceptions=True)
        changes = []
        now = e.clock.now()
        for chunk, result in zip(chunks, results, strict=True):
            for t in chunk:
                answer = None if isinstance(result, BaseException) else result.get(t.job_id)
                if answer is None or answer.item.error_code:
                    if isinstance(result, BaseException) and not isinstance(result, DrsError):
                        raise result
                    why = result.message if isinstance(result, DrsError) else "batch-detail did not return it"
                    if t.bad_reads + 1 >= BREAKPOINT_READS:  # do not hold a delete for ever on a breakpoint
                        changes.append(e.apply(t, Decision(event="breakpoint", reason=f"breakpoint unreadable: {why}",
                                                           updates={"breakpoint_read": True, "bad_reads": 0})))
                    else:
                        changes.append(e.apply(t, on_bad_read(t, f"breakpoint unreadable: {why}", now, e.tuning,
                                                              e.rng)))
                        t.observe = False
                    continue
                changes.append(e.apply(t, on_breakpoint(t, answer.item.gtid, answer.item.incre_start_position)))
        e.commit(changes)

    async def _call(self, detail: bool, tasks: list[Tracked]) -> dict[str, Reading]:
        ids = [t.job_id for t in tasks]
        if detail:
            answers: Any = await self.engine.client.batch_detail(ids)
        else:
            answers = await self.engine.client.status_chunk(ids)
        out = {}
        for k, a in answers.items():
            if a.failure is not None:  # only this id could not be read (its own follow-up call failed)
                out[k] = Reading(None, a.failure.code or "unreadable", a.failure.message, a.request_id)
            else:
                out[k] = Reading(a.item.status, a.item.error_code, a.item.error_message, a.request_id,
                                 getattr(a.item, "order_id", None), detail=detail)
        return out

    async def _read(self, chunks: list[tuple[bool, list[Tracked]]]) -> bool:
        e = self.engine
        results = await asyncio.gather(*(self._call(d, c) for d, c in chunks), return_exceptions=True)
        faultpoints.hit("after_response", "poll")
        changes = []
        any_changed = False
        now = e.clock.now()
        for (detail, tasks), result in zip(chunks, results, strict=True):
            api = "batch-detail" if detail else "batch-status"
            if isinstance(result, AuthFailure):
                e.abort = e.abort or EngineAbort(f"credentials refused: {result.message}")
                e.stop_event.set()
                continue
            if isinstance(result, BaseException):
                if not isinstance(result, DrsError):
                    raise result
                e.stats[f"observe_error:{type(result).__name__}"] += 1
                for t in tasks:
                    changes.append(e.apply(t, on_bad_read(t, f"unreadable answer: {result.message}", now,
                                                          e.tuning, e.rng)))
                continue
            for t in tasks:
                reading = result.get(t.job_id)
                before = t.state
                if reading is None:
                    decision = on_bad_read(t, f"{api} did not return it", now, e.tuning, e.rng)
                else:
                    decision = on_reading(t, reading, now, e.tuning, e.rng)
                changes.append(e.apply(t, decision))
                # Progress means a local transition, not merely a new remote status (RELEASE_RESOURCE_STARTED
                # right after a stop is expected, not news).
                any_changed = any_changed or t.state is not before
        if any_changed:
            # Progress in this round: the rest of the cohort is likely close behind, so look again soon.
            soon = now + timedelta(seconds=e.tuning.poll_interval)
            for _, tasks in chunks:
                for t in tasks:
                    if t.state not in TERMINAL and t.observe and t.unchanged_polls:
                        t.unchanged_polls = 0
                        t.next_check = min(t.next_check, soon)
        e.commit(changes)
        return any_changed

