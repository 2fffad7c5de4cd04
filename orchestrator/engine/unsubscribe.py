"""Yearly/monthly tasks under --unsubscribe-prepaid: look up the order's resources, unsubscribe them (BSS), then
wait — without terminate — for the service to release the task; the delete follows as for any task.

The unsubscribe is a billing action and a destructive call: its intent (`unsubscribing`, with the resource ids)
is committed before the request, and an unknown outcome is reconciled by reading the task, never re-sent blindly.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from orchestrator import faultpoints
from orchestrator.engine.decide import Decision, Tracked, backoff
from orchestrator.errors import DrsError, OutcomeUnknown, Throttled, TransportFailure
from orchestrator.lifecycle import TaskState

if TYPE_CHECKING:
    from orchestrator.engine.loop import Engine


def failures(result: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(resource id, code, message) of each refused resource in an unsubscribe answer (drs.bss.UnsubscribeResult)."""
    refused = getattr(result, "refused", None) or {}
    return [(rid, r.error_code, r.error_msg) for rid, r in refused.items()]


async def unsubscribe(e: Engine, bss: Any, tasks: list[Tracked]) -> None:
    now = e.clock.now()
    changes = []
    if bss is None:
        e.commit([e.apply(t, Decision("block", reason="yearly/monthly order: --unsubscribe-prepaid needs a BSS "
                                      "endpoint (--bss-site cn|intl or DRS_TEARDOWN_BSS_ENDPOINT)"))
                  for t in tasks if t.state is TaskState.PENDING])
        return
    fresh = [t for t in tasks if t.state is TaskState.PENDING]
    # Reconciling (an unsubscribe of unknown outcome): wait for the service's reading; the loop reads it.
    for t in tasks:
        if t.state is TaskState.UNSUBSCRIBING:
            t.observe, t.next_check = True, now
    lookups = await asyncio.gather(*(bss.query_resources(t.order_id, job_ids=[t.job_id]) for t in fresh),
                                   return_exceptions=True)
    intents: list[tuple[Tracked, list[str]]] = []
    for t, found in zip(fresh, lookups, strict=True):
        if isinstance(found, BaseException):
            if not isinstance(found, DrsError):
                raise found
            changes.append(e.apply(t, Decision(reason=f"order {t.order_id}: resources unreadable: {found.message}",
                                               updates={"observe": True, "busy_retries": t.busy_retries + 1,
                                                        "next_check": now + _delay(e, t)})))
            continue
        ids = [str(x) for x in found]
        if not ids:
            changes.append(e.apply(t, Decision("block", reason=f"order {t.order_id}: BSS lists no resource to "
                                               "unsubscribe")))
            continue
        intents.append((t, ids))
    e.commit(changes)
    if not intents:
        return
    e.commit([e.apply(t, Decision("unsubscribe", reason=f"unsubscribe order {t.order_id} (resources "
                                  f"{', '.join(ids)}): a billing action; no terminate follows"))
              for t, ids in intents])  # intent before action
    faultpoints.hit("after_intent", "unsubscribe")
    results = await asyncio.gather(*(e.leases.send(bss.unsubscribe(ids, job_ids=[t.job_id])) for t, ids in intents),
                                   return_exceptions=True)
    faultpoints.hit("after_response", "unsubscribe")
    now = e.clock.now()
    changes = []
    for (t, _ids), result in zip(intents, results, strict=True):
        changes.append(e.apply(t, _decide(e, t, result, now)))
    e.commit(changes)


def _delay(e: Engine, t: Tracked) -> timedelta:
    return timedelta(seconds=backoff(e.tuning, t.busy_retries + 1, e.rng))


def _decide(e: Engine, t: Tracked, result: Any, now: Any) -> Decision:
    if isinstance(result, BaseException):
        if not isinstance(result, DrsError):
            raise result
        if (isinstance(result, TransportFailure) and not isinstance(result, OutcomeUnknown)) \
                or isinstance(result, Throttled):
            return Decision("requeue", reason=f"unsubscribe not sent: {result.message}", error_code=result.code,
                            updates={"observe": True, "next_check": now + _delay(e, t)})
        if isinstance(result, OutcomeUnknown):
            return Decision(event="outcome_unknown", reason=f"unsubscribe outcome unknown: {result.message}; "
                            "reading the task first", error_code=result.code,
                            updates={"observe": True, "next_check": now})
        return Decision("block", reason=f"BSS refused the unsubscribe of order {t.order_id}: {result.message}",
                        error_code=result.code)
    refused = failures(result)
    if refused:
        what = "; ".join(f"{rid or '?'}: {code or '?'} {msg or ''}".strip() for rid, code, msg in refused)
        return Decision("block", reason=f"BSS refused the unsubscribe of order {t.order_id}: {what}",
                        error_code=refused[0][1])
    return Decision("unsubscribe_accepted", reason=f"order {t.order_id} unsubscribed: waiting for the service to "
                    "release the task (no terminate)", updates={"observe": True, "unchanged_polls": 0,
                                                                "next_check": now})
