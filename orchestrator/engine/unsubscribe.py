"""Yearly/monthly tasks under --unsubscribe-prepaid: look up the order's resources, unsubscribe them (BSS), then
wait — without terminate — for the service to release the task; the delete follows as for any task.

The unsubscribe is a billing action and a destructive call: its intent (`unsubscribing`, with the resource ids on
the audit record) is committed before the request. An unknown outcome (a crash, a lost answer) is reconciled by
reading: the task's status, then BSS's status of the order's resources (3: closed); only resources BSS still shows
in use are unsubscribed once more, and BSS's own "already unsubscribed" answer counts as accepted.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from orchestrator import faultpoints
from orchestrator.drs.bss import ALREADY_UNSUBSCRIBED
from orchestrator.engine.decide import Decision, Tracked, backoff, stopped_note
from orchestrator.engine.protocol import EngineLike
from orchestrator.engine.tuning import MAX_RESENDS
from orchestrator.errors import DrsError, OutcomeUnknown, Throttled, TransportFailure
from orchestrator.lifecycle import TaskState

CLOSED = 3  # BSS resource status: closed (unsubscribed)


def failures(result: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(resource id, code, message) of each refused resource in an unsubscribe answer (drs.bss.UnsubscribeResult)."""
    refused = getattr(result, "refused", None) or {}
    return [(rid, r.error_code, r.error_msg) for rid, r in refused.items()
            if r.error_code != ALREADY_UNSUBSCRIBED]


def _later(e: EngineLike, t: Tracked, now: datetime) -> datetime:
    return now + timedelta(seconds=backoff(e.tuning, t.busy_retries + 1, e.rng))


async def unsubscribe(e: EngineLike, bss: Any, tasks: list[Tracked]) -> None:
    now = e.clock.now()
    if bss is None:
        e.commit([e.apply(t, Decision("block", reason="yearly/monthly order: --unsubscribe-prepaid needs a BSS "
                                      "endpoint (--bss-site cn|intl or DRS_TEARDOWN_BSS_ENDPOINT)"))
                  for t in tasks])
        return
    lookups = await asyncio.gather(*(bss.resource_statuses(t.order_id, job_ids=[t.job_id]) for t in tasks),
                                   return_exceptions=True)
    changes, intents = [], []
    for t, found in zip(tasks, lookups, strict=True):
        if isinstance(found, BaseException):
            if not isinstance(found, DrsError):
                raise found
            changes.append(e.apply(t, Decision(reason=f"order {t.order_id}: resources unreadable: {found.message}",
                                               updates={"observe": True, "busy_retries": t.busy_retries + 1,
                                                        "next_check": _later(e, t, now)}, persist=False)))
            continue
        open_ids = [rid for rid, status in found.items() if status != CLOSED]
        reconciling = t.state is TaskState.UNSUBSCRIBING
        if reconciling and found and not open_ids:
            # The unsubscribe whose answer we lost did land: BSS shows every resource closed.
            changes.append(e.apply(t, Decision("unsubscribe_accepted", reason=f"order {t.order_id}: BSS shows its "
                                               "resources closed; the lost unsubscribe took effect",
                                               updates={"observe": True, "next_check": now})))
        elif not found:
            changes.append(e.apply(t, Decision("block", reason=f"order {t.order_id}: BSS lists no resource to "
                                               "unsubscribe" + stopped_note(t))))
        elif reconciling and t.resends >= MAX_RESENDS:
            changes.append(e.apply(t, Decision("fail", reason=f"unsubscribe outcome unknown {t.resends} times; "
                                               "giving up")))
        else:
            intents.append((t, open_ids))
    e.commit(changes)
    if not intents:
        return
    e.commit([e.apply(t, Decision(
        "unsubscribe_again" if t.state is TaskState.UNSUBSCRIBING else "unsubscribe",
        reason=(f"reconcile: BSS still shows {', '.join(ids)} in use; unsubscribe sent once more"
                if t.state is TaskState.UNSUBSCRIBING else
                f"unsubscribe order {t.order_id} (resources {', '.join(ids)}): a billing action; no terminate "
                "follows"),
        updates={"resends": t.resends + 1} if t.state is TaskState.UNSUBSCRIBING else {},
        values={"order_id": t.order_id, "resource_ids": ids})) for t, ids in intents])  # intent before action
    faultpoints.hit("after_intent", "unsubscribe")
    results = await asyncio.gather(*(e.leases.send(bss.unsubscribe(ids, job_ids=[t.job_id])) for t, ids in intents),
                                   return_exceptions=True)
    faultpoints.hit("after_response", "unsubscribe")
    now = e.clock.now()
    e.commit([e.apply(t, _decide(e, t, result, now)) for (t, _), result in zip(intents, results, strict=True)])


def _decide(e: EngineLike, t: Tracked, result: Any, now: datetime) -> Decision:
    if isinstance(result, BaseException):
        if not isinstance(result, DrsError):
            raise result
        if (isinstance(result, TransportFailure) and not isinstance(result, OutcomeUnknown)) \
                or isinstance(result, Throttled):
            return Decision("requeue", reason=f"unsubscribe not sent: {result.message}", error_code=result.code,
                            updates={"observe": True, "busy_retries": t.busy_retries + 1,
                                     "next_check": _later(e, t, now)})
        if isinstance(result, OutcomeUnknown):
            return Decision(event="outcome_unknown", reason=f"unsubscribe outcome unknown: {result.message}; "
                            "reading the task and BSS first", error_code=result.code,
                            updates={"observe": True, "next_check": now})
        return Decision("block", reason=f"BSS refused the unsubscribe of order {t.order_id}: {result.message}",
                        error_code=result.code)
    refused = failures(result)
    if refused:
        what = "; ".join(f"{rid or '?'}: {code or '?'} {msg or ''}".strip() for rid, code, msg in refused)
        return Decision("block", reason=f"BSS refused the unsubscribe of order {t.order_id}: {what}",
                        error_code=refused[0][1])
    return Decision("unsubscribe_accepted", reason=f"order {t.order_id} unsubscribed: waiting for the service to "
                    "release the task (no terminate)", request_id=getattr(result, "request_id", None),
                    updates={"observe": True, "unchanged_polls": 0, "next_check": now})
