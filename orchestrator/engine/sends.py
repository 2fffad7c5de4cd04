"""The loop's destructive calls: intent committed first, then the batch-jobs request, then each item's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from orchestrator import faultpoints
from orchestrator.drs.codes import ErrorClass, classify_code
from orchestrator.engine.decide import Answer, Decision, Failure, Tracked, on_answer, on_failure, stop_plan
from orchestrator.engine.protocol import EngineLike
from orchestrator.engine.unsubscribe import unsubscribe
from orchestrator.errors import (
    AuthFailure,
    DrsError,
    GuardRefused,
    InvalidTransition,
    OutcomeUnknown,
    RequestRejected,
    Throttled,
    TransportFailure,
)
from orchestrator.lifecycle import TaskState
from orchestrator.wire import DeletePermit, StopRequest


def failure_of(exc: DrsError) -> Failure:
    """Tell a failed batch-jobs call apart: never sent, refused as a whole, or outcome unknown."""
    code = exc.code or _fault_class(exc)
    if isinstance(exc, AuthFailure):
        return Failure("auth", exc.message, code, exc.request_id)
    if (isinstance(exc, TransportFailure) and not isinstance(exc, OutcomeUnknown)) or isinstance(exc, Throttled):
        return Failure("not_sent", exc.message, code, exc.request_id)
    if isinstance(exc, RequestRejected) and classify_code(exc.code) is ErrorClass.FATAL:
        return Failure("rejected", exc.message, code, exc.request_id)
    return Failure("unknown", exc.message, code, exc.request_id)


def _fault_class(exc: DrsError) -> str:
    if exc.http_status is not None:
        return f"HTTP{exc.http_status}"
    return type(exc.__cause__).__name__ if exc.__cause__ is not None else type(exc).__name__


def _batches(items: Sequence[Any], solo: Sequence[bool], size: int) -> list[list[Any]]:
    """Batches of `size`, except that a task marked solo goes alone (to find which one a batch was refused for)."""
    together = [it for it, alone in zip(items, solo, strict=True) if not alone]
    out = [together[i : i + size] for i in range(0, len(together), size)]
    out += [[it] for it, alone in zip(items, solo, strict=True) if alone]
    return out


class Sender:
    """Stops, deletes and unsubscribes, each behind its committed intent."""

    def __init__(self, engine: EngineLike, bss: Any = None) -> None:
        self.engine = engine
        self.bss = bss

    async def stop(self, tasks: list[Tracked]) -> None:
        e = self.engine
        intents, requests = [], []
        for t in tasks:
            plan = stop_plan(t, e.tuning)
            try:
                change = e.apply(t, Decision(plan.trigger, reason=plan.reason,
                                             updates={"forced": t.forced or plan.force,
                                                      "stop_attempts": t.stop_attempts + 1}))
            except (GuardRefused, InvalidTransition):
                t.observe = True
                continue
            intents.append(change)
            e.stop_sent(t)
            requests.append((t, StopRequest(t.job_id, force=plan.force, breakpoint=e.tuning.breakpoint)))
        if not intents:
            return
        with e.leases.sending(t.job_id for t, _ in requests):  # in flight: never handed back meanwhile
            e.commit(intents)  # intent before action
            faultpoints.hit("after_intent", "stop")
            batches = _batches(requests, [t.solo for t, _ in requests], e.tuning.batch_size)
            results = await asyncio.gather(*(e.leases.send(e.client.stop([r for _, r in b])) for b in batches),
                                           return_exceptions=True)
            faultpoints.hit("after_response", "stop")
            self._answers("stop", batches, results)

    async def delete(self, tasks: list[Tracked]) -> None:
        e = self.engine
        intents, permitted = [], []
        for t in tasks:
            resend = t.state is TaskState.DELETING
            try:
                step, permit = e.lifecycle.delete(t.model)  # the guard
            except (GuardRefused, InvalidTransition):
                t.observe = True
                continue
            why = ("reconcile: outcome unknown, delete sent once more" if resend
                   else f"delete: {t.last_status} is deletable")
            intents.append(e.record_step(t, step, why))
            t.delete_sent = True
            permitted.append((t, permit))
        if not intents:
            return
        with e.leases.sending(t.job_id for t, _ in permitted):
            e.commit(intents)  # intent before action
            faultpoints.hit("after_intent", "delete")
            batches = _batches(permitted, [t.solo for t, _ in permitted], e.tuning.batch_size)
            results = await asyncio.gather(
                *(e.leases.send(e.client.delete([p for _, p in b])) for b in batches), return_exceptions=True)
            faultpoints.hit("after_response", "delete")
            self._answers("delete", batches, results)

    async def unsubscribe(self, tasks: list[Tracked]) -> None:
        """Yearly/monthly tasks under --unsubscribe-prepaid: the BSS flow (engine/unsubscribe.py)."""
        with self.engine.leases.sending(t.job_id for t in tasks):
            await unsubscribe(self.engine, self.bss, tasks)

    def _answers(self, kind: str, batches: list[list[tuple[Tracked, DeletePermit | StopRequest]]],
                 results: list[Any]) -> None:
        e = self.engine
        now = e.clock.now()
        changes = []
        for batch, result in zip(batches, results, strict=True):
            for t, _ in batch:
                if isinstance(result, BaseException):
                    if not isinstance(result, DrsError):
                        raise result
                    decision = on_failure(t, kind, failure_of(result), len(batch), now, e.tuning, e.rng)
                    if decision.event == "outcome_unknown":
                        e.stats[f"{kind}_unknown"] += 1
                    elif decision.trigger == "requeue":
                        e.stats[f"{kind}_not_sent"] += 1
                else:
                    item = result.items.get(t.job_id)
                    answer = Answer(None) if item is None else Answer(item.status, item.error_code, item.error_msg,
                                                                      result.request_id)
                    decision = on_answer(t, kind, answer, now, e.tuning, e.rng)
                    if decision.trigger == "requeue" and decision.updates.get("busy_retries"):
                        e.stats["busy"] += 1
                changes.append(e.apply(t, decision))
        e.commit(changes)

