"""The loop's steps between reads, as functions of the engine (engine/loop.py): act on what is due, keep the
leases, enforce deadlines, sleep until something is due, and record how the run ended."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from orchestrator.engine.decide import Decision, Tracked, children_verdict, needs_fresh_reading, on_deadline
from orchestrator.engine.feed import planned as feed_planned
from orchestrator.engine.feed import unplanned_targets
from orchestrator.engine.protocol import EngineLike
from orchestrator.errors import EXIT_INCOMPLETE
from orchestrator.lifecycle import OUTCOMES, TaskState, exit_code_for, outcome_of
from orchestrator.store.repo import Event


async def act(e: EngineLike) -> None:
    now = e.clock.now()
    ready = [t for t in e.active() if not t.observe and t.next_check <= now]
    ready = without_waiting_parents(e, ready)
    for t in ready:
        if needs_fresh_reading(t, now, e.tuning):
            t.observe, t.next_check = True, now  # read it first; it is acted on next round
    ready = [t for t in ready if not t.observe]
    unsubscribes = [t for t in ready if t.state is TaskState.UNSUBSCRIBING
                    or (t.state is TaskState.PENDING and t.order_id and e.tuning.unsubscribe_prepaid)]
    if unsubscribes:
        await e.sender.unsubscribe(unsubscribes)
    stops = [t for t in ready if t not in unsubscribes
             and (t.state is TaskState.STOPPING or e.lifecycle.may(t.model, "stop"))]
    if stops and not e.stop_event.is_set():
        await e.sender.stop(stops)
    plan_ready = [t for t in e.active() if not t.observe and t.state is TaskState.PENDING
                  and e.lifecycle.may(t.model, "released")]
    if plan_ready:
        e.commit([e.apply(t, Decision("released", reason=f"{t.last_status} observed at plan",
                                            updates={"delete_phase": True, "phase_started": e.clock.now()}))
                     for t in plan_ready])
    deletes = without_waiting_parents(e,
        [t for t in e.active() if not t.observe and t.state in (TaskState.DELETABLE, TaskState.DELETING)])
    if deletes and e.tuning.breakpoint:
        unread = [t for t in deletes if not t.breakpoint_read and t.state is TaskState.DELETABLE]
        if unread:
            await e.reader.breakpoints(unread)
        deletes = [t for t in deletes if t.breakpoint_read or t.state is not TaskState.DELETABLE]
    if deletes and not e.stop_event.is_set():
        await e.sender.delete(deletes)

def without_waiting_parents(e: EngineLike, ready: list[Tracked]) -> list[Tracked]:
    """Re-edit children go first: a parent is acted on only once its children are removed."""
    out, blocked = [], []
    for t in ready:
        kids = e.children.get(t.job_id)
        if not kids:
            out.append(t)
            continue
        outcomes = {j: outcome_of(e.tasks[j].state) if j in e.tasks else "pending" for j in kids}
        verdict = children_verdict(t, outcomes)
        if verdict is None:
            out.append(t)
        elif verdict.trigger is not None:
            blocked.append(e.apply(t, verdict))
    if blocked:
        e.commit(blocked)
    return out

def leases_step(e: EngineLike) -> None:
    """Between steps: let go of tasks another worker took, pick up strays, and claim another batch."""
    for job_id in e.leases.take_lost([t.job_id for t in e.active()]):
        del e.tasks[job_id]
        e.invalidate()
    if e.leases.orphans:
        e.leases.orphans = False
        e.adopt(e.leases.held(), fresh=False)
    if e.leases.due_for_claim():
        e.adopt(e.leases.claim(), fresh=e.fresh and e.leases.claim_more)

def take_feed(e: EngineLike) -> None:
    """Adopt what a planning under way recorded since the last look; a planning that failed stops the run."""
    feed = e.feed
    if feed is None or not feed.arrived.is_set():
        return
    rows = feed.take()
    if rows:
        if e.shared:
            e.leases.claim_more = True  # claimed (leased) from the store like any other task
        else:
            e.adopt(rows, fresh=True)  # as planned a moment ago: the plan's reading is fresh
    if feed.failure is not None:
        e.stop_event.set()


def deadlines(e: EngineLike, now: datetime) -> None:
    changes = []
    for t in list(e.active()):
        d = on_deadline(t, now, e.tuning, e.deadline)
        if d is not None:
            changes.append(e.apply(t, d))
    if changes:
        e.commit(changes)


async def sleep(e: EngineLike) -> None:
    now = e.clock.now()
    active = e.active()
    waiting_for_plan = not active and e.feed is not None and not e.feed.done
    wakes = [min((t.next_check for t in active), default=e.deadline if waiting_for_plan else now), e.deadline]
    stops = [t.phase_started for t in active if not t.delete_phase]
    deletes = [t.phase_started for t in active if t.delete_phase]
    if stops:
        wakes.append(min(stops) + timedelta(seconds=e.tuning.stop_timeout))
    if deletes:
        wakes.append(min(deletes) + timedelta(seconds=e.tuning.delete_timeout))
    delay = max(0.0, min((min(wakes) - now).total_seconds(), e.tuning.max_poll_interval))
    if e.shared:
        # Back in time to claim what others' leases leave behind; at once while unclaimed work remains.
        delay = 0.0 if e.leases.claim_more else min(delay, e.tuning.lease_check)
    if delay <= 0:
        await asyncio.sleep(0)
        return
    sleeper = asyncio.ensure_future(e.clock.sleep(delay))
    stopper = asyncio.ensure_future(e.stop_event.wait())
    waits = {sleeper, stopper}
    if e.feed is not None and not e.feed.done:
        waits.add(asyncio.ensure_future(e.feed.arrived.wait()))  # planning recorded more tasks
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()


def record_end(e: EngineLike, *, interrupted: bool) -> None:
    e.early.cancel()  # an early completeness read still in flight is not needed any more
    store, run_id, now = e.store, e.run_id, e.clock.now()
    if e.feed is not None and e.feed.discarded:
        e.report(force=True)
        return  # an empty match: the run recorded before planning was removed, there is nothing to record
    if e.feed is not None and e.feed.before_end is not None:
        e.feed.before_end()  # (a run still planning: its trail opens before its end is recorded)
    if e.exchanges:
        store.record_exchanges(run_id, e.ctx.worker, e.exchanges)
        e.exchanges = []
    e.leases.release()
    e.report(force=True)
    active = store.active_count(run_id)
    planned = feed_planned(e.feed)
    run = store.run(run_id)
    unplanned = unplanned_targets(run.options if run is not None else {})
    if run is not None and run.status == "finished":
        pass  # ended already (a rail refused while planning, or another worker recorded the end)
    elif active == 0 and planned and unplanned:
        # Every task that could be planned is done; the targets whose planning failed wait for `resume`.
        store.set_run(run_id, status="interrupted")
        store.append_events(run_id, e.ctx, [Event(trigger="run_interrupted", detail=(
            f"not planned: {'; '.join(f'{k}: {v}' for k, v in unplanned.items())}; resumable with "
            "`drs-teardown resume`"))], now)
    elif active == 0 and planned:
        counts = Counter(outcome_of(st) for st, _ in store.job_states(run_id).values())
        code = max(exit_code_for(counts), EXIT_INCOMPLETE if e.left_behind else 0)
        ordered = {k: counts[k] for k in OUTCOMES if counts[k]}
        # With several workers the first to see the run done records it, once (under the run row's lock).
        store.finish_run(run_id, e.ctx, Event(trigger="run_finished", outcome=str(code),
                                                 detail=f"counts={ordered}"), now, code)
    elif interrupted and (not e.shared or store.claimable_count(run_id, now) == active):
        # (Shared: only when no other live worker is still on the run.)
        store.set_run(run_id, status="interrupted")
        store.append_events(run_id, e.ctx, [Event(trigger="run_interrupted", detail=(
            f"{active} task(s) pending{'' if planned else '; planning did not finish'}; resumable with "
            "`drs-teardown resume`"))], now)

