"""The DRS v3 client on httpx: the four calls teardown needs, paging made explicit, per-item results parsed,
retries on a predicate with full-jitter backoff, every exchange reported to a recorder (never a header).

Retried (the same request, after a full-jitter pause; Retry-After honoured): connection failures before
the request left, timeouts and dropped connections on reads, 5xx on reads, 429 / APIGW.0308 / DRS.M01503
(throttled), a request-level DRS.M01504 (busy), and IAM unavailable (5xx, 429, unreachable) for a token.
Never retried: anything after a destructive request may have taken effect (a 5xx, a timeout, a dropped
connection: OutcomeUnknown, reconciled by reading the status), 4xx (RequestRejected, with its code),
401/403 and IAM refusals (AuthFailure), and malformed answers (MalformedResponse: fail closed).
Per-item DRS.M01504 inside a 202 is for the engine to schedule.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from orchestrator import faultpoints
from orchestrator.clock import Clock, RealClock
from orchestrator.drs.codes import BUSY_CODES, THROTTLE_CODES
from orchestrator.drs.models import (
    DB_USE_TYPES,
    ActionItem,
    BatchDetailResponse,
    BatchJobsResponse,
    BatchStatusResponse,
    ErrorBody,
    JobDetail,
    JobInfo,
    JobListResponse,
    StatusItem,
)
from orchestrator.drs.pacing import Pacer
from orchestrator.errors import (
    ApiError,
    AuthError,
    AuthFailure,
    DrsError,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    ServerError,
    Throttled,
    TransportFailure,
)
from orchestrator.secrets import mask_headers
from orchestrator.wire import DeletePermit, Exchange, Recorder, StopRequest, is_genuine

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# httpx's timeouts bound each network operation; this bounds a whole exchange (a server trickling bytes).
DEFAULT_EXCHANGE_DEADLINE = 120.0
STATUS_CHUNK = 100  # batch-status: a page holds at most 100 results
DETAIL_CHUNK = 10  # batch-detail: Huawei recommends at most 10 ids a call
LIST_PAGE = 100
USER_AGENT = "drs-teardown"

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class Answer(Generic[T]):
    """One item of a batch answer with the X-Request-Id of the call that carried it."""

    item: T
    request_id: str | None


@dataclass(frozen=True)
class ActionResults:
    """Per-item results of one batch-jobs call (items missing from the answer are absent here)."""

    items: dict[str, ActionItem]
    request_id: str | None
    http_status: int



@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff: after the n-th failed attempt sleep U(0, min(cap, base * 2**(n-1)));
    a Retry-After is honoured (up to `max_retry_after`) plus a little jitter so waiters do not return in step.
    At most `attempts` attempts and `max_elapsed` seconds of waiting per call: no call waits for ever."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0
    max_elapsed: float = 300.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + self.rng.uniform(0, self.base)
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** max(0, attempt - 1)))



def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP-date; None if absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def fault_class(exc: BaseException) -> str:
    """What went wrong, as retries are counted: an error code, else an HTTP status, else the I/O error."""
    if isinstance(exc, DrsError):
        if exc.code:
            return exc.code
        if exc.http_status is not None:
            return f"HTTP{exc.http_status}"
        cause = exc.__cause__
        if cause is not None:
            return type(cause).__name__
    return type(exc).__name__


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class DrsClient:
    """Async DRS v3 client bound to one project."""

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
    ) -> None:
        self.project_id = project_id
        self._auth = auth
        self.clock = clock or RealClock()
        self.pacer = pacer or Pacer(self.clock)
        self.retry = retry or RetryPolicy()
        self.recorder = recorder
        self.stats: Counter[str] = Counter()
        self._sem = asyncio.Semaphore(max_concurrency)
        self.exchange_deadline = exchange_deadline
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=auth,
            transport=transport,
            timeout=timeout,
            verify=verify,
            headers={"Content-Type": "application/json", "X-Language": language, "User-Agent": USER_AGENT},
            event_hooks={"request": [_log_request], "response": [_log_response]},
        )

    async def __aenter__(self) -> DrsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _path(self, suffix: str) -> str:
        return f"/v3/{self.project_id}/jobs{suffix}"

    # -- transport ------------------------------------------------------------------------------------------

    async def _send_once(self, api: str, method: str, path: str, body: dict[str, Any],
                         job_ids: tuple[str, ...], attempt: int, destructive: bool) -> httpx.Response:
        await self.pacer.acquire(api)
        started = time.perf_counter()
        at = self.clock.now()
        response: httpx.Response | None = None
        error_code: str | None = None
        try:
            async with self._sem, asyncio.timeout(self.exchange_deadline):
                response = await self._http.request(method, path, content=json.dumps(body).encode())
            if faultpoints.armed():
                faultpoints.hit("after_send", _kind(api, body))
        except AuthError as exc:
            # IAM did not issue a token, so the DRS request itself was never sent (or was refused with 401).
            error_code = "IAM"
            raise _from_auth_error(api, exc) from exc
        except TimeoutError as exc:
            error_code = "ExchangeDeadline"
            self.stats["transport"] += 1
            message = f"{api}: no complete answer within {self.exchange_deadline:g}s"
            if destructive:
                raise OutcomeUnknown(message, code="ExchangeDeadline", api=api) from exc
            raise TransportFailure(message, code="ExchangeDeadline", api=api) from exc
        except httpx.TransportError as exc:
            error_code = type(exc).__name__
            iam = self._iam_failure(exc)
            if iam is not None:
                error_code = "IAM"
                raise _from_auth_error(api, iam) from exc
            self.stats["transport"] += 1
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                # The request never reached the server: safe to retry, destructive or not.
                raise TransportFailure(f"{api}: cannot connect: {exc}", api=api) from exc
            if destructive:
                raise OutcomeUnknown(f"{api}: no answer after sending ({type(exc).__name__})",
                                     api=api) from exc
            raise TransportFailure(f"{api}: {type(exc).__name__}: {exc}", api=api) from exc
        finally:
            if self.recorder is not None:
                if response is not None and response.status_code >= 400:
                    error_code = _error_code(response)
                self.recorder(Exchange(
                    api=api, method=method, path=path,
                    http_status=response.status_code if response is not None else None,
                    request_id=response.headers.get("X-Request-Id") if response is not None else None,
                    duration_ms=(time.perf_counter() - started) * 1000, job_ids=job_ids,
                    error_code=error_code, attempt=attempt, at=at,
                ))
        return response

    def _iam_failure(self, exc: httpx.TransportError) -> AuthError | None:
        """The AuthError for a transport failure on the auth's own token request (IAM unreachable)."""
        translate = getattr(self._auth, "auth_error_for", None)
        return translate(exc) if translate is not None else None

    def _raise_for(self, api: str, response: httpx.Response, destructive: bool) -> None:
        status = response.status_code
        if status < 400:
            self.pacer.succeeded(api)
            return
        err = _error_body(response)
        request_id = response.headers.get("X-Request-Id")
        detail = f"{api}: HTTP {status} {err.error_code or ''} {err.error_msg or ''}".rstrip()
        kw: dict[str, Any] = {"code": err.error_code, "http_status": status, "request_id": request_id,
                              "api": api}
        retry_after = _retry_after(response, self.clock.now())
        if status == 429 or err.error_code in THROTTLE_CODES:
            self.stats["throttled"] += 1
            self.pacer.throttled(api, min(retry_after, self.retry.max_retry_after) if retry_after is not None
                                 else self.retry.base)
            raise Throttled(detail, retry_after=retry_after, **kw)
        self.pacer.succeeded(api)
        if status in (401, 403):
            raise AuthFailure(detail, **kw)
        if status >= 500:
            self.stats["server_error"] += 1
            if destructive:
                raise OutcomeUnknown(detail, **kw)
            error = ServerError(detail, **kw)
            setattr(error, "retry_after", retry_after)  # a 503 may say when to come back  # noqa: B010
            raise error
        if err.error_code in BUSY_CODES:
            # The whole request refused as busy ("another operation is in progress"): nothing was applied.
            self.stats["busy"] += 1
            raise Throttled(detail, retry_after=retry_after, **kw)
        raise RequestRejected(detail, **kw)

    async def _call(self, api: str, method: str, path: str, body: dict[str, Any], job_ids: Iterable[str] = (),
                    *, destructive: bool = False,
                    accept_400_results: bool = False) -> tuple[httpx.Response, Any]:
        ids = tuple(job_ids)
        started = self.clock.monotonic()

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, OutcomeUnknown):
                return False
            return isinstance(exc, TransportFailure | ServerError | Throttled)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, Throttled) else None
            if retry_after is None and isinstance(exc, ServerError):
                retry_after = getattr(exc, "retry_after", None)
            self.stats["retries"] += 1
            if exc is not None:
                self.stats[f"retry:{fault_class(exc)}"] += 1
            return self.retry.backoff(state.attempt_number, retry_after)

        def stop(state: RetryCallState) -> bool:
            failure = state.outcome.exception() if state.outcome is not None else None
            told = failure.retry_after if isinstance(failure, Throttled) else None
            # Do not start a wait the service asked for that would end past the budget.
            spent = self.clock.monotonic() - started + min(told or 0.0, self.retry.max_retry_after)
            done = state.attempt_number >= self.retry.attempts or spent >= self.retry.max_elapsed
            if done and failure is not None:
                self.stats[f"gave_up:{fault_class(failure)}"] += 1
            return done

        retrying = AsyncRetrying(retry=retry_if_exception(retryable), wait=wait, stop=stop,
                                 sleep=self.clock.sleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                response = await self._send_once(api, method, path, body, ids, number, destructive)
                if accept_400_results and response.status_code == 400:
                    payload = _json(api, response)
                    if isinstance(payload, dict) and isinstance(payload.get("results"), list) \
                            and payload["results"]:
                        self.pacer.succeeded(api)
                        return response, payload
                self._raise_for(api, response, destructive)
                return response, _json(api, response)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- calls ----------------------------------------------------------------------------------------------

    async def list_jobs(self, db_use_type: str, *, status: str | None = None,
                        engine_type: str | None = None, name: str | None = None) -> list[JobInfo]:
        """Every job of one db_use_type matching the filters, across all pages."""
        if db_use_type not in DB_USE_TYPES:
            raise ValueError(f"db_use_type must be one of {', '.join(DB_USE_TYPES)}, not {db_use_type!r}")
        jobs: list[JobInfo] = []
        page = 1
        while True:
            body: dict[str, Any] = {"cur_page": page, "per_page": LIST_PAGE, "db_use_type": db_use_type}
            for key, value in (("status", status), ("engine_type", engine_type), ("name", name)):
                if value:
                    body[key] = value
            _, payload = await self._call("list", "POST", self._path(""), body)
            parsed = _model("list", JobListResponse, payload)
            jobs.extend(parsed.jobs)
            if not parsed.jobs or len(jobs) >= parsed.total_record:
                return jobs
            page += 1

    async def batch_status(self, job_ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        """Status of each id, ≤100 ids a call with per_page set (the default page is 5)."""
        return _merge(await asyncio.gather(*(self.status_chunk(c) for c in _chunks(job_ids, STATUS_CHUNK))))

    async def status_chunk(self, ids: Sequence[str]) -> dict[str, Answer[StatusItem]]:
        """One batch-status call for ≤100 ids."""
        return await self._read_page("batch-status", BatchStatusResponse, list(ids))

    async def batch_detail(self, job_ids: Sequence[str]) -> dict[str, Answer[JobDetail]]:
        """Details of each id, ≤10 ids a call; unknown ids come back as items with an error_code."""
        return _merge(await asyncio.gather(
            *(self._read_page("batch-detail", BatchDetailResponse, c) for c in _chunks(job_ids, DETAIL_CHUNK))))

    async def _read_page(self, api: str, model: type[BatchStatusResponse] | type[BatchDetailResponse],
                         ids: list[str]) -> dict[str, Answer[Any]]:
        """One batch-status/batch-detail call: every id on one page (per_page set explicitly)."""
        body = {"jobs": ids, "page_req": {"cur_page": 1, "per_page": len(ids)}}
        response, payload = await self._call(api, "POST", self._path(f"/{api}"), body, ids, accept_400_results=True)
        parsed = _model(api, model, payload)
        _check_ids(api, ids, [r.id for r in parsed.results])
        rid = response.headers.get("X-Request-Id")
        return {r.id: Answer(r, rid) for r in parsed.results}

    async def stop(self, requests: Sequence[StopRequest]) -> ActionResults:
        """terminate / force_terminate, one batch-jobs call."""
        jobs: list[dict[str, Any]] = []
        for r in requests:
            kind = "force_terminate" if r.force else "terminate"
            item: dict[str, Any] = {"delete_type": kind, "job_id": r.job_id}
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
        response, payload = await self._call("batch-jobs", "DELETE", self._path("/batch-jobs"),
                                             {"jobs": jobs}, ids, destructive=True, accept_400_results=True)
        parsed = _model("batch-jobs", BatchJobsResponse, payload)
        _check_ids("batch-jobs", ids, [r.id for r in parsed.results])
        return ActionResults({r.id: r for r in parsed.results}, response.headers.get("X-Request-Id"),
                             response.status_code)


def _kind(api: str, body: dict[str, Any]) -> str:
    """The crash-point kind of a request: stop, delete, poll, list or detail."""
    if api == "batch-jobs":
        jobs = body.get("jobs") or [{}]
        return "delete" if jobs[0].get("delete_type") == "delete" else "stop"
    return {"batch-status": "poll", "batch-detail": "detail"}.get(api, api)


def _from_auth_error(api: str, exc: AuthError) -> DrsError:
    """IAM trouble as the DRS layer's own errors: unavailable is retryable, a refusal is an AuthFailure."""
    message = f"{api}: no token: {exc}"
    if exc.retryable:
        return TransportFailure(message, code="IAM", http_status=exc.status_code, request_id=exc.request_id,
                                api=api)
    return AuthFailure(message, code="IAM", http_status=exc.status_code, request_id=exc.request_id, api=api)


def _merge(parts: Iterable[dict[str, Answer[T]]]) -> dict[str, Answer[T]]:
    merged: dict[str, Answer[T]] = {}
    for part in parts:
        merged.update(part)
    return merged


log = logging.getLogger("drs_teardown.http")


async def _log_request(request: httpx.Request) -> None:
    # Runs after authentication, so the auth headers are present: every secret one is masked.
    if log.isEnabledFor(logging.INFO):
        log.info("request %s %s headers=%s", request.method, request.url.path, mask_headers(request.headers))


async def _log_response(response: httpx.Response) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("response %s %s -> %s request_id=%s", response.request.method, response.request.url.path,
                 response.status_code, response.headers.get("X-Request-Id"))


def _json(api: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedResponse(f"{api}: HTTP {response.status_code} with a body that is not JSON",
                                http_status=response.status_code, api=api,
                                request_id=response.headers.get("X-Request-Id")) from exc


def _error_body(response: httpx.Response) -> ErrorBody:
    try:
        return ErrorBody.parse_any(response.json())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ErrorBody()


def _error_code(response: httpx.Response) -> str | None:
    return _error_body(response).error_code or f"HTTP{response.status_code}"


def _model(api: str, model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedResponse(f"{api}: malformed response ({where}: {first['msg']})", api=api) from exc


def _check_ids(api: str, asked: list[str], got: list[str]) -> None:
    unexpected = set(got) - set(asked)
    if unexpected or len(got) != len(set(got)):
        raise MalformedResponse(f"{api}: response names ids that were not asked for or repeats one", api=api)


__all__ = [
    "DEFAULT_TIMEOUT",
    "ActionResults",
    "Answer",
    "ApiError",
    "DeletePermit",
    "DrsClient",
    "DrsError",
    "Exchange",
    "RetryPolicy",
    "StopRequest",
    "fault_class",
]
