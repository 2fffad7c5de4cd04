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
from orchestrator.drs.models import StatusItem
from orchestrator.wire import DeletePermit, Exchange, StopRequest

T = TypeVar("T")
R = TypeVar("R")


class TargetRouter:
    """Routes the engine's calls (status_chunk, stop, delete) to the client of each job's target."""

    def __init__(self, clients: Mapping[str, DrsClient], target_of: Mapping[str, str]) -> None:
        self.clients = dict(clients)
        self.target_of = dict(target_of)
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
        default = next(iter(self.clients))
        for item in items:
            parts.setdefault(self.target_of.get(job_id(item), default), []).append(item)
        return parts

    async def _fan_out(self, parts: Mapping[str, list[T]],
                       call: Callable[[DrsClient, list[T]], Awaitable[R]]) -> list[R]:
        labels = list(parts)
        results = await asyncio.gather(*(call(self.clients[label], parts[label]) for label in labels),
                                       return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        if not ok:
            first = results[0]
            assert isinstance(first, BaseException)
            raise first
        return ok  # type: ignore[return-value]

    async def status_chunk(self, ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        merged: dict[str, Answer[StatusItem]] = {}
        for part in await self._fan_out(self._split(ids, lambda i: i), lambda c, p: c.status_chunk(p)):
            merged.update(part)
        return merged

    async def batch_status(self, job_ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        merged: dict[str, Answer[StatusItem]] = {}
        for part in await self._fan_out(self._split(job_ids, lambda i: i), lambda c, p: c.batch_status(p)):
            merged.update(part)
        return merged

    async def stop(self, requests: Sequence[StopRequest]) -> ActionResults:
        return _merge(await self._fan_out(self._split(requests, lambda r: r.job_id), lambda c, p: c.stop(p)))

    async def delete(self, permits: Sequence[DeletePermit]) -> ActionResults:
        return _merge(await self._fan_out(self._split(permits, lambda p: p.job_id), lambda c, p: c.delete(p)))


def _merge(results: list[ActionResults]) -> ActionResults:
    items: dict[str, Any] = {}
    for r in results:
        items.update(r.items)
    request_id = ",".join(r.request_id for r in results if r.request_id) or None
    return ActionResults(items=items, request_id=request_id, http_status=max(r.http_status for r in results))
