"""One client face over several targets' clients, for an engine that takes one client: each call is split by
the target each job belongs to, the parts run concurrently, and their answers are merged.

A part that fails leaves its items out of the merged answer (the engine treats a missing item as unknown and
reads before it acts again), unless every part failed: then the first failure is raised as the engine expects.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from orchestrator.drs.client import ActionResults, Answer, DrsClient
from orchestrator.drs.models import JobDetail, StatusItem
from orchestrator.errors import DrsError
from orchestrator.wire import DeletePermit, Exchange, StopRequest

T = TypeVar("T")
R = TypeVar("R")


class TargetRouter:
    """Routes the engine's calls (status_chunk, stop, delete) to the client of each job's target."""

    def __init__(self, clients: Mapping[str, DrsClient], target_of: Mapping[str, str]) -> None:
        self.clients = dict(clients)
        self.target_of = target_of  # live: a run still being planned adds its tasks' targets as it records them
        self.first = next(iter(self.clients.values()))
        self.project_id = self.first.project_id
        self._recorder: Callable[[Exchange], None] | None = None

    @property
    def recorder(self) -> Callable[[Exchange], None] | None:
        return self._recorder

    @recorder.setter
    def recorder(self, value: Callable[[Exchange], None] | None) -> None:
        self._recorder = value
        for client in self.clients.values():
            client.recorder = value

    @property
    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for client in self.clients.values():
            total.update(client.stats)
        return total

    def __getattr__(self, name: str) -> Any:  # anything else: the first target's client (read-only helpers)
        return getattr(self.first, name)

    def _split(self, items: Sequence[T], job_id: Callable[[T], str]) -> dict[str, list[T]]:
        parts: dict[str, list[T]] = {}
        for item in items:
            label = self.target_of.get(job_id(item))
            if label not in self.clients:  # never a call to a region the task may not be in
                raise LookupError(f"task {job_id(item)} has no known target (known: {', '.join(self.clients)})")
            parts.setdefault(label, []).append(item)
        return parts

    async def _fan_out(self, parts: Mapping[str, list[T]],
                       call: Callable[[DrsClient, list[T]], Awaitable[R]]) -> list[R | BaseException]:
        labels = list(parts)
        return await asyncio.gather(*(call(self.clients[label], parts[label]) for label in labels),
                                    return_exceptions=True)

    async def _read(self, ids: Sequence[str], call: Callable[[DrsClient, list[str]], Awaitable[dict[str, Any]]],
                    empty: Callable[[str], Any]) -> dict[str, Any]:
        """A read split by target; a target that fails (401, unreachable, 403 project) answers each of its ids
        with that failure, so its tasks end with the reason while the other targets go on."""
        parts = self._split(ids, lambda i: i)
        merged: dict[str, Any] = {}
        for part, result in zip(parts.values(), await self._fan_out(parts, call), strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, DrsError):
                    raise result
                merged.update({i: Answer(empty(i), None, failure=result) for i in part})
            else:
                merged.update(result)
        return merged

    async def status_chunk(self, ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        return await self._read(ids, lambda c, p: c.status_chunk(p), lambda i: StatusItem(id=i))

    async def batch_status(self, job_ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        return await self._read(job_ids, lambda c, p: c.batch_status(p), lambda i: StatusItem(id=i))

    async def batch_detail(self, job_ids: Sequence[str]) -> dict[str, Answer[JobDetail]]:
        return await self._read(job_ids, lambda c, p: c.batch_detail(p), lambda i: JobDetail(id=i))

    async def stop(self, requests: Sequence[StopRequest]) -> ActionResults:
        return _merge(await self._fan_out(self._split(requests, lambda r: r.job_id), lambda c, p: c.stop(p)))

    async def delete(self, permits: Sequence[DeletePermit]) -> ActionResults:
        return _merge(await self._fan_out(self._split(permits, lambda p: p.job_id), lambda c, p: c.delete(p)))


def _merge(parts: list[ActionResults | BaseException]) -> ActionResults:
    """A part that failed leaves its items out (the engine reads before acting on them again); every part
    failed: the first failure, as the engine expects of one client."""
    results = [r for r in parts if not isinstance(r, BaseException)]
    if not results:
        raise parts[0]  # type: ignore[misc]
    items: dict[str, Any] = {}
    for r in results:
        items.update(r.items)
    request_id = ",".join(r.request_id for r in results if r.request_id) or None
    return ActionResults(items=items, request_id=request_id, http_status=max(r.http_status for r in results))
