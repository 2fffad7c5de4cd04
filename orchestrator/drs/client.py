"""The DRS v3 client: the four calls teardown needs, paging made explicit, per-id answers for every read.

Reads (list, batch-status, batch-detail) are idempotent and retried (see `orchestrator.drs.transport`). A read
answers per id: every id asked comes back as an `Answer` holding the service's item (a status, a detail, or a
per-id error such as DRS.M00289 / DRS.M05004 not found, DRS.M00202 invalid id), or, when only that id could not
be read, the failure. Ids a partial answer leaves out (a 200 without them, a 400 listing only the failing id)
are asked again in a call of their own; a whole-call 400 that is about one id (DRS.M00202, not found) is
narrowed by splitting the call until that id is alone. A read raises only when the call as a whole fails.

batch-jobs (stop, delete) is destructive: never retried once it may have left (OutcomeUnknown); ids its
answer leaves out are listed in `ActionResults.missing`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from orchestrator.clock import Clock
from orchestrator.drs import reading
from orchestrator.drs.bss import BSS_PATHS, BssClient
from orchestrator.drs.codes import INVALID_PARAMETER_CODES, NOT_FOUND_CODES
from orchestrator.drs.models import (
    DB_USE_TYPES,
    ActionItem,
    BatchDetailResponse,
    BatchJobsResponse,
    BatchStatusResponse,
    JobDetail,
    JobInfo,
    JobListResponse,
    StatusItem,
)
from orchestrator.drs.pacing import Pacer
from orchestrator.drs.reading import MAX_RESPONSE_BYTES, Reply
from orchestrator.drs.transport import (
    DEFAULT_EXCHANGE_DEADLINE,
    DEFAULT_TIMEOUT,
    Budget,
    HttpCore,
    RetryPolicy,
    fault_class,
)
from orchestrator.errors import ApiError, AuthFailure, DrsError, RequestRejected
from orchestrator.wire import DeletePermit, Exchange, Recorder, StopRequest, is_genuine

STATUS_CHUNK = 100  # batch-status: a page holds at most 100 results
DETAIL_CHUNK = 10  # batch-detail: Huawei recommends at most 10 ids a call
LIST_PAGE = 100
# A whole-call 400 with one of these is about one id of the call: split the call to find it.
PER_ID_CODES = INVALID_PARAMETER_CODES | NOT_FOUND_CODES

T = TypeVar("T")
BatchModel = type[BatchStatusResponse] | type[BatchDetailResponse]


@dataclass(frozen=True)
class Answer(Generic[T]):
    """One id of a read: the item the service gave (maybe a per-id error item with error_code) and the
    X-Request-Id of the call that carried it; or, with `failure` set, the error that kept only this id unread
    (then `item` holds just the id)."""

    item: T
    request_id: str | None
    failure: DrsError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class ActionResults:
    """Per-item results of one batch-jobs call; ids the answer left out are in `missing` (outcome unknown)."""

    items: dict[str, ActionItem]
    request_id: str | None
    http_status: int
    missing: tuple[str, ...] = ()


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


async def _all(calls: Iterable[Awaitable[dict[str, Answer[T]]]]) -> dict[str, Answer[T]]:
    """Run concurrently, merged; on the first failure cancel the rest (no request left mid-flight) and raise."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        parts = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    merged: dict[str, Answer[T]] = {}
    for part in parts:
        merged.update(part)
    return merged


class DrsClient:
    """Async DRS v3 client bound to one project on one endpoint."""

    def __init__(
        self,
        base_url: str,
        project_id: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        clock: Clock | None = None,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        recorder: Recorder | None = None,
        max_concurrency: int = 16,
        exchange_deadline: float = DEFAULT_EXCHANGE_DEADLINE,
        language: str = "en-us",
        deadline: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.project_id = project_id
        self._transport, self._verify, self._timeout = transport, verify, timeout
        self._core = HttpCore(base_url, setting="DRS endpoint", auth=auth, transport=transport, timeout=timeout,
                              verify=verify, clock=clock, pacer=pacer, retry=retry, recorder=recorder,
                              max_concurrency=max_concurrency, exchange_deadline=exchange_deadline,
                              language=language, budget=Budget(deadline), max_response_bytes=max_response_bytes)
        self._bss: list[BssClient] = []

    # -- what the engine and the use cases read and set -----------------------------------------------------

    @property
    def recorder(self) -> Recorder | None:
        return self._core.recorder

    @recorder.setter
    def recorder(self, value: Recorder | None) -> None:
        self._core.recorder = value

    @property
    def deadline(self) -> float | None:
        """The time budget: a time on `clock.monotonic()`'s scale by which every call ends, or None."""
        return self._core.budget.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._core.budget.deadline = value

    @property
    def budget(self) -> Budget:
        return self._core.budget

    @property
    def stats(self) -> Counter[str]:
        return self._core.stats

    @property
    def clock(self) -> Clock:
        return self._core.clock

    @property
    def pacer(self) -> Pacer:
        return self._core.pacer

    @property
    def retry(self) -> RetryPolicy:
        return self._core.retry

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def language(self) -> str:
        return self._core.language

    @property
    def auth(self) -> httpx.Auth | None:
        return self._core.auth

    async def __aenter__(self) -> DrsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for bss in self._bss:
            await bss.aclose()
        await self._core.aclose()

    def bss(self, base_url: str, *, pacer: Pacer | None = None) -> BssClient:
        """A BSS client with this client's credentials, language, budget, statistics and recorder (closed with
        it); `pacer` should be the BSS endpoint's own budget (`process_pacer(clock, rate, key=base_url)`)."""
        client = BssClient(base_url, auth=self._core.auth, transport=self._transport, timeout=self._timeout,
                           verify=self._verify, clock=self._core.clock, pacer=pacer, retry=self._core.retry,
                           recorder=self._forward, language=self._core.language, budget=self._core.budget,
                           stats=self._core.stats, exchange_deadline=self._core.exchange_deadline)
        self._bss.append(client)
        return client

    def _forward(self, exchange: Exchange) -> None:
        if self._core.recorder is not None:
            self._core.recorder(exchange)

    def _path(self, suffix: str) -> str:
        return f"/v3/{self.project_id}/jobs{suffix}"

    # -- list -----------------------------------------------------------------------------------------------

    async def list_jobs(self, db_use_type: str, *, status: str | None = None,
                        engine_type: str | None = None, name: str | None = None) -> list[JobInfo]:
        """Every job of one db_use_type matching the filters, across all pages."""
        if db_use_type not in DB_USE_TYPES:
            raise ValueError(f"db_use_type must be one of {', '.join(DB_USE_TYPES)}, not {db_use_type!r}")
        jobs: dict[str, JobInfo] = {}
        page = 1
        while True:
            body: dict[str, Any] = {"cur_page": page, "per_page": LIST_PAGE, "db_use_type": db_use_type}
            for key, value in (("status", status), ("engine_type", engine_type), ("name", name)):
                if value:
                    body[key] = value
            parsed = await self._core.call("list", "POST", self._path(""), body, (), _list_page(page))
            for info in parsed.jobs:
                jobs.setdefault(info.id, info)  # a row shifted onto the next page by a change is listed once
            # The last page is the one total_record says: never ask past it (DRS.M00211).
            if not parsed.jobs or page * LIST_PAGE >= parsed.total_record:
                return list(jobs.values())
            page += 1

    # -- batch-status / batch-detail ------------------------------------------------------------------------

    async def batch_status(self, job_ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        """Status of each id, ≤100 ids a call with per_page set (the default page is 5)."""
        return await _all(self.status_chunk(c) for c in _chunks(job_ids, STATUS_CHUNK))

    async def status_chunk(self, ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        """batch-status for ≤100 ids: an Answer for every id (see the module docstring)."""
        return await self._read("batch-status", BatchStatusResponse, list(dict.fromkeys(ids)))

    async def batch_detail(self, job_ids: Sequence[str]) -> dict[str, Answer[JobDetail]]:
        """Details of each id, ≤10 ids a call: an Answer for every id."""
        return await _all(self._read("batch-detail", BatchDetailResponse, c)
                          for c in _chunks(list(dict.fromkeys(job_ids)), DETAIL_CHUNK))

    async def _read(self, api: str, model: BatchModel, ids: list[str]) -> dict[str, Answer[Any]]:
        """Answers for `ids`: one call, then the ids it left out in a call of their own, or split in two when
        the service refused the whole call over one id."""
        if not ids:
            return {}
        try:
            got = await self._read_page(api, model, ids)
        except RequestRejected as exc:
            if exc.code not in PER_ID_CODES or exc.http_status != 400:
                raise
            if len(ids) == 1:
                return {ids[0]: Answer(_error_item(model, ids[0], exc), exc.request_id)}
            self.stats[f"split:{exc.code}"] += 1
            middle = len(ids) // 2
            return await _all([self._follow_up(api, model, ids[:middle]),
                               self._follow_up(api, model, ids[middle:])])
        missing = [i for i in ids if i not in got]
        if missing:
            self.stats[f"reasked:{api}"] += len(missing)
            got.update(await self._follow_up(api, model, missing))
        return got

    async def _follow_up(self, api: str, model: BatchModel, ids: list[str]) -> dict[str, Answer[Any]]:
        """A call of their own for some ids of a call: if it fails, it fails for these ids alone."""
        try:
            return await self._read(api, model, ids)
        except AuthFailure:
            raise
        except DrsError as exc:
            self.stats[f"unread:{fault_class(exc)}"] += len(ids)
            return {i: Answer(_blank(model, i), exc.request_id, exc) for i in ids}

    async def _read_page(self, api: str, model: BatchModel, ids: list[str]) -> dict[str, Answer[Any]]:
        """One batch-status/batch-detail call: every id on one page (per_page set explicitly). An answer that
        names none of the ids is malformed, as is one with an id not asked for (both retried)."""
        body = {"jobs": ids, "page_req": {"cur_page": 1, "per_page": len(ids)}}

        def parse(reply: Reply) -> dict[str, Answer[Any]]:
            parsed = reading.validate(api, reply, model, reading.parse_json(api, reply))
            got = [r.id for r in parsed.results]
            reading.check_ids(api, reply, ids, got)
            if not got:
                raise reading.malformed(api, reply, f"that answers none of the {len(ids)} id(s) asked")
            return {r.id: Answer(r, reply.request_id) for r in parsed.results}

        return await self._core.call(api, "POST", self._path(f"/{api}"), body, tuple(ids), parse,
                                     accept_400_results=True)

    # -- batch-jobs -----------------------------------------------------------------------------------------

    async def stop(self, requests: Sequence[StopRequest]) -> ActionResults:
        """terminate / force_terminate, one batch-jobs call."""
        jobs: list[dict[str, Any]] = []
        for r in requests:
            item: dict[str, Any] = {"delete_type": "force_terminate" if r.force else "terminate", "job_id": r.job_id}
            if r.breakpoint:
                item["is_show_breakpoint_position"] = True
            jobs.append(item)
        return await self._batch_jobs(jobs)

    async def delete(self, permits: Sequence[DeletePermit]) -> ActionResults:
        """delete, one batch-jobs call; only with permits from the lifecycle guard."""
        for permit in permits:
            if not is_genuine(permit):
                raise TypeError("delete needs DeletePermits issued by the lifecycle guard")
        return await self._batch_jobs([{"delete_type": "delete", "job_id": p.job_id} for p in permits])

    async def _batch_jobs(self, jobs: list[dict[str, Any]]) -> ActionResults:
        ids = [j["job_id"] for j in jobs]

        def parse(reply: Reply) -> ActionResults:
            parsed = reading.validate("batch-jobs", reply, BatchJobsResponse,
                                      reading.parse_json("batch-jobs", reply))
            reading.check_ids("batch-jobs", reply, ids, [r.id for r in parsed.results])
            items = {r.id: r for r in parsed.results}
            return ActionResults(items, reply.request_id, reply.status, tuple(i for i in ids if i not in items))

        return await self._core.call("batch-jobs", "DELETE", self._path("/batch-jobs"), {"jobs": jobs},
                                     tuple(ids), parse, destructive=True, accept_400_results=True)


LIST_SHORT_REREADS = 2  # a list page with fewer rows than its total_record implies is read again this often


def _list_page(page: int) -> Callable[[Reply], JobListResponse]:
    """The parser of one list page: a page with fewer rows than its own total_record implies (a partial answer)
    is malformed, so it is read again; after LIST_SHORT_REREADS such answers in a row the page is taken as the
    service gives it (whether total_record counts rows the list does not show is unknown, reference §14.7)."""
    short = 0

    def parse(reply: Reply) -> JobListResponse:
        nonlocal short
        parsed = reading.validate("list", reply, JobListResponse, reading.parse_json("list", reply))
        expected = min(LIST_PAGE, max(0, parsed.total_record - (page - 1) * LIST_PAGE))
        if len(parsed.jobs) < expected and short < LIST_SHORT_REREADS:
            short += 1
            raise reading.malformed("list", reply, f"page {page} lists {len(parsed.jobs)} rows, its total_record "
                                    f"({parsed.total_record}) implies {expected}")
        return parsed

    return parse


def _blank(model: BatchModel, job_id: str) -> Any:
    return (StatusItem if model is BatchStatusResponse else JobDetail)(id=job_id)


def _error_item(model: BatchModel, job_id: str, exc: ApiError) -> Any:
    """The per-id item for a whole-call refusal narrowed down to this one id."""
    message = exc.message.split(f" {exc.code} ", 1)[-1] if exc.code else None
    return (StatusItem if model is BatchStatusResponse else JobDetail)(
        id=job_id, error_code=exc.code, error_message=message)


__all__ = [
    "BSS_PATHS",
    "DEFAULT_TIMEOUT",
    "ActionResults",
    "Answer",
    "ApiError",
    "BssClient",
    "Budget",
    "DeletePermit",
    "DrsClient",
    "DrsError",
    "Exchange",
    "RetryPolicy",
    "StopRequest",
    "fault_class",
]
