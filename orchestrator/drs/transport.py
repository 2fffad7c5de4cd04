"""The HTTP core under the DRS and BSS clients: one endpoint, paced, bounded, retried on a predicate with
full-jitter backoff, every exchange recorded (never a header) and logged with structured fields.

Retried (the same request, after a full-jitter pause; Retry-After honoured): for every call, anything that
shows the request was not applied: a refused connection, a connect timeout, 429 / APIGW.0308 / DRS.M01503
(throttled), a whole-request DRS.M01504 (busy), IAM unavailable; for reads (idempotent) also timeouts,
dropped connections, 5xx and malformed answers (not JSON, truncated, the wrong shape, larger than the cap).
Never retried: a destructive request that may have taken effect (a 5xx, a timeout, a dropped connection:
OutcomeUnknown, reconciled by reading), 4xx (RequestRejected), 401/403 and IAM refusals (AuthFailure).

The budget: `deadline` (a time on the clock's monotonic scale, or None) bounds every call with its retries and
waits. An attempt gets min(exchange_deadline, what is left); no wait starts that would end past it; a read that
runs out raises DeadlineReached, a destructive request that had left raises OutcomeUnknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from orchestrator import faultpoints
from orchestrator.clock import Clock, RealClock
from orchestrator.drs import reading
from orchestrator.drs.endpoints import parse_base_url
from orchestrator.drs.pacing import Pacer
from orchestrator.drs.reading import MAX_RESPONSE_BYTES, Reply
from orchestrator.errors import (
    AuthError,
    AuthFailure,
    ConfigError,
    DeadlineReached,
    DrsError,
    MalformedResponse,
    OutcomeUnknown,
    ServerError,
    Throttled,
    TransportFailure,
)
from orchestrator.secrets import mask_headers
from orchestrator.wire import Exchange, Recorder

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# httpx's timeouts bound each network operation; this bounds a whole exchange (a server trickling bytes).
DEFAULT_EXCHANGE_DEADLINE = 120.0
USER_AGENT = "drs-teardown"
LANGUAGES = ("en-us", "zh-cn")

T = TypeVar("T")
log = logging.getLogger("drs_teardown.http")


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


@dataclass
class Budget:
    """The time a client may still spend: a deadline on the clock's monotonic scale (None: no budget).
    Shared by the clients made from one another (DRS and its BSS client), settable at any time."""

    deadline: float | None = None

    def remaining(self, clock: Clock) -> float | None:
        return None if self.deadline is None else self.deadline - clock.monotonic()


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


def validate_language(language: str) -> str:
    value = language.strip().lower()
    if value not in LANGUAGES:
        raise ConfigError(f"invalid language {language!r} (--language / DRS_TEARDOWN_LANGUAGE): "
                          f"expected one of {', '.join(LANGUAGES)}")
    return value


def safe_url(url: httpx.URL) -> str:
    """The URL to name in an error: no user:password@, no query."""
    return str(url.copy_with(username=None, password=None, query=None))


def make_http(base_url: str, *, setting: str, **kw: Any) -> httpx.AsyncClient:
    """An httpx client on `base_url` (stripped); an unusable URL is a ConfigError naming `setting`."""
    return httpx.AsyncClient(base_url=parse_base_url(base_url, what=setting), **kw)


def describe(exc: BaseException) -> str:
    """The cause of an I/O error in a few words ('connection refused'), never empty."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and (seen.errno or seen.strerror):
            text = os.strerror(seen.errno) if seen.errno else str(seen.strerror)
            return text[:1].lower() + text[1:]
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    if text:
        return text[:1].lower() + text[1:]
    return {
        httpx.RemoteProtocolError: "the server closed the connection before a complete answer",
        httpx.ReadError: "the connection broke while reading the answer",
        httpx.WriteError: "the connection broke while sending the request",
    }.get(type(exc), type(exc).__name__)


def _job_fields(job_ids: tuple[str, ...]) -> dict[str, Any]:
    """The tasks an exchange was about, for a log line: job_id for one, job_ids for a batch (at most 100)."""
    if len(job_ids) == 1:
        return {"job_id": job_ids[0]}
    return {"job_ids": list(job_ids)} if job_ids else {}


def _seconds(value: float | None, limit: float) -> float:
    return limit if value is None else min(value, limit)


class HttpCore:
    """One endpoint's HTTP for the API clients: `call` sends, reads, parses and retries one exchange."""

    def __init__(self, base_url: str, *, setting: str, auth: httpx.Auth | None, transport: httpx.AsyncBaseTransport
                 | None, timeout: httpx.Timeout, verify: bool | str, clock: Clock | None, pacer: Pacer | None,
                 retry: RetryPolicy | None, recorder: Recorder | None, max_concurrency: int,
                 exchange_deadline: float, language: str, budget: Budget | None = None,
                 stats: Counter[str] | None = None, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.language = validate_language(language)
        self.auth = auth
        self.clock = clock or RealClock()
        self.pacer = pacer or Pacer(self.clock)
        self.retry = retry or RetryPolicy()
        self.recorder = recorder
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.budget = budget or Budget()
        self.exchange_deadline = exchange_deadline
        self.max_response_bytes = max_response_bytes
        self.timeout = timeout
        self._sem = asyncio.Semaphore(max_concurrency)
        self._inflight: Counter[asyncio.Task[Any]] = Counter()
        self._http = make_http(
            base_url, setting=setting, auth=auth, transport=transport, timeout=timeout, verify=verify,
            headers={"Content-Type": "application/json", "X-Language": self.language, "User-Agent": USER_AGENT},
            event_hooks={"request": [_log_request]},
            # No more connections than requests in flight: httpcore's pool looks at every connection it holds
            # (idle ones with a readability syscall) each time it places a request.
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency))
        self.base_url = str(self._http.base_url).rstrip("/")

    async def aclose(self) -> None:
        """Close; calls still in flight in other tasks (siblings of a failed gather) are cancelled and awaited
        first, so no connection attempt outlives the client (or the event loop)."""
        current = asyncio.current_task()
        others = [t for t in self._inflight if t is not current and not t.done()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=5.0)
        await self._http.aclose()

    # -- one call, with its retries -------------------------------------------------------------------------

    async def call(self, api: str, method: str, path: str, body: dict[str, Any], job_ids: tuple[str, ...],
                   parse: Callable[[Reply], T], *, destructive: bool = False,
                   accept_400_results: bool = False) -> T:
        """Send until `parse` accepts an answer or the failure is not worth another attempt."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight[task] += 1
        try:
            return await self._call(api, method, path, body, job_ids, parse, destructive, accept_400_results)
        finally:
            if task is not None:
                self._inflight[task] -= 1
                if self._inflight[task] <= 0:
                    del self._inflight[task]

    async def _call(self, api: str, method: str, path: str, body: dict[str, Any], job_ids: tuple[str, ...],
                    parse: Callable[[Reply], T], destructive: bool, accept_400_results: bool) -> T:
        started = self.clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await self._attempt(api, method, path, body, job_ids, attempt, destructive)
                if not (accept_400_results and reply.status == 400 and reading.results_listed(reply)):
                    self._raise_for(api, reply, destructive)
                self.pacer.succeeded(api)
                return parse(reply)
            except DrsError as exc:
                if isinstance(exc, MalformedResponse):
                    self.stats["malformed"] += 1
                if not self._retryable(exc, destructive):
                    raise
                wait = self.retry.backoff(attempt, self._told(exc))
                self._give_up_unless_time(exc, attempt, started, wait)
                self.stats["retries"] += 1
                self.stats[f"retry:{fault_class(exc)}"] += 1
                await self.clock.sleep(wait)

    @staticmethod
    def _retryable(exc: DrsError, destructive: bool) -> bool:
        if isinstance(exc, OutcomeUnknown | DeadlineReached):
            return False
        if destructive:
            # Only what shows the request was not applied: it never left, or it was refused as a whole.
            return isinstance(exc, Throttled) or (type(exc) is TransportFailure and getattr(exc, "unsent", False))
        return isinstance(exc, TransportFailure | ServerError | Throttled | MalformedResponse)

    def _told(self, exc: DrsError) -> float | None:
        return exc.retry_after if isinstance(exc, Throttled | ServerError) else None

    def _give_up_unless_time(self, exc: DrsError, attempt: int, started: float, wait: float) -> None:
        """Raise (the failure itself, or DeadlineReached) when no further attempt fits."""
        if attempt >= self.retry.attempts or self.clock.monotonic() - started + wait > self.retry.max_elapsed:
            self.stats[f"gave_up:{fault_class(exc)}"] += 1
            raise exc
        remaining = self.budget.remaining(self.clock)
        if remaining is not None and wait >= remaining:
            self.stats["deadline"] += 1
            self.stats[f"gave_up:{fault_class(exc)}"] += 1
            raise DeadlineReached(f"{exc.api}: the time budget runs out before another attempt "
                                  f"(last: {exc.message})", code="DeadlineReached", api=exc.api,
                                  url=exc.url, http_status=exc.http_status) from exc

    def _raise_for(self, api: str, reply: Reply, destructive: bool) -> None:
        error = reading.error_for(api, reply, destructive=destructive, now=self.clock.now())
        if error is None:
            return
        if isinstance(error, Throttled):
            if reading.is_throttle(error):
                self.stats["throttled"] += 1
                told = error.retry_after
                self.pacer.throttled(api, min(told, self.retry.max_retry_after) if told is not None
                                     else self.retry.base)
            else:
                self.stats["busy"] += 1
                self.pacer.succeeded(api)
        else:
            self.pacer.succeeded(api)
            if reply.status >= 500:
                self.stats["server_error"] += 1
        raise error

    # -- one attempt ----------------------------------------------------------------------------------------

    def _out_of_time(self, api: str, url: str) -> DeadlineReached:
        self.stats["deadline"] += 1
        return DeadlineReached(f"{api}: the time budget ran out before {url} was called", code="DeadlineReached",
                               api=api, url=url)

    async def _attempt(self, api: str, method: str, path: str, body: dict[str, Any], job_ids: tuple[str, ...],
                       attempt: int, destructive: bool) -> Reply:
        request = self._http.build_request(method, path, content=json.dumps(body).encode())
        url = safe_url(request.url)
        remaining = self.budget.remaining(self.clock)
        if remaining is not None and remaining <= 0:
            raise self._out_of_time(api, url)
        await self.pacer.acquire(api)
        remaining = self.budget.remaining(self.clock)
        if remaining is not None and remaining <= 0:
            raise self._out_of_time(api, url)
        limit = _seconds(remaining, self.exchange_deadline)
        by_budget = remaining is not None and remaining < self.exchange_deadline
        request.extensions["timeout"] = httpx.Timeout(
            connect=_seconds(self.timeout.connect, limit), read=_seconds(self.timeout.read, limit),
            write=_seconds(self.timeout.write, limit), pool=_seconds(self.timeout.pool, limit)).as_dict()
        started, at = time.perf_counter(), self.clock.now()
        reply: Reply | None = None
        code: str | None = None
        entered = False
        try:
            async with asyncio.timeout(limit):
                async with self._sem:
                    entered = True
                    response = await self._http.send(request, stream=True)
                    try:
                        raw = await reading.read_capped(response, api=api, url=url, limit=self.max_response_bytes)
                    finally:
                        await response.aclose()
            reply = Reply(response.status_code, response.headers, raw, url)
            if faultpoints.armed():
                faultpoints.hit("after_send", _kind(api, body))
        except MalformedResponse as exc:
            code = exc.code
            raise
        except AuthError as exc:
            # IAM did not issue a token, so the request itself was never sent (or was refused with 401).
            code = "IAM"
            raise _from_auth_error(api, exc, url) from exc
        except TimeoutError as exc:
            code = "DeadlineReached" if by_budget else "ExchangeDeadline"
            self.stats["transport"] += 1
            raise timed_out(api, url, limit, by_budget=by_budget, entered=entered, destructive=destructive,
                            code=code) from exc
        except httpx.DecodingError as exc:
            code = "DecodingError"
            raise MalformedResponse(f"{api}: the answer from {url} cannot be decoded: {describe(exc)}",
                                    code=code, api=api, url=url) from exc
        except httpx.TransportError as exc:
            code = type(exc).__name__
            iam = getattr(self.auth, "auth_error_for", lambda _: None)(exc)
            if iam is not None:
                code = "IAM"
                raise _from_auth_error(api, iam, url) from exc
            self.stats["transport"] += 1
            raise transport_failure(api, url, exc, budget_spent=by_budget and self._spent(),
                                    destructive=destructive) from exc
        finally:
            if reply is not None and reply.status >= 400:
                code = reading.error_code(reply)
            duration = (time.perf_counter() - started) * 1000
            self._report(Exchange(api=api, method=method, path=path, http_status=reply.status if reply else None,
                                  request_id=reply.request_id if reply else None, duration_ms=duration,
                                  job_ids=job_ids, error_code=code, attempt=attempt, at=at))
        return reply

    def _spent(self) -> bool:
        remaining = self.budget.remaining(self.clock)
        return remaining is not None and remaining <= 0.5

    def _report(self, exchange: Exchange) -> None:
        if self.recorder is not None:
            self.recorder(exchange)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s %s -> %s (%.0f ms)", exchange.api, exchange.method, exchange.path,
                     exchange.http_status if exchange.http_status is not None else exchange.error_code,
                     exchange.duration_ms, extra={
                         "event": "http", "api": exchange.api, "method": exchange.method, "path": exchange.path,
                         "status": exchange.http_status, "request_id": exchange.request_id,
                         "duration_ms": round(exchange.duration_ms, 1), "attempt": exchange.attempt,
                         "error_code": exchange.error_code, "job_count": len(exchange.job_ids),
                         **_job_fields(exchange.job_ids)})


def timed_out(api: str, url: str, limit: float, *, by_budget: bool, entered: bool, destructive: bool,
              code: str) -> DrsError:
    """The error for an attempt its whole-exchange bound (the exchange deadline or the budget) cut short."""
    if not entered:
        return DeadlineReached(f"{api}: the time budget ran out waiting to call {url}", code=code, api=api,
                               url=url) if by_budget else _unsent(f"{api}: could not call {url} in time", api, url)
    message = f"{api}: no answer from {url} within {limit:.3g} s"
    if by_budget:
        message += " (the time budget ran out)"
    if destructive:
        return OutcomeUnknown(message, code=code, api=api, url=url)
    if by_budget:
        return DeadlineReached(message, code=code, api=api, url=url)
    return TransportFailure(message, code=code, api=api, url=url)

def transport_failure(api: str, url: str, exc: httpx.TransportError, *, budget_spent: bool,
                      destructive: bool) -> DrsError:
    """The error for an httpx transport failure: the URL and the cause, retryable only if nothing left."""
    sent = exc.request.extensions.get("timeout")
    timeouts = httpx.Timeout(**sent) if isinstance(sent, dict) else DEFAULT_TIMEOUT
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # The request never reached the server: safe to retry, destructive or not.
        cause = (f"no connection within {timeouts.connect:.3g} s" if isinstance(exc, httpx.ConnectTimeout)
                 else describe(exc))
        if budget_spent and isinstance(exc, httpx.TimeoutException):
            return DeadlineReached(f"{api}: cannot connect to {url}: {cause} (the time budget ran out)",
                                   code="DeadlineReached", api=api, url=url)
        return _unsent(f"{api}: cannot connect to {url}: {cause}", api, url)
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        wait = timeouts.read if isinstance(exc, httpx.ReadTimeout) else timeouts.write
        message = f"{api}: no answer from {url} within {wait:.3g} s"
    else:
        message = f"{api}: no complete answer from {url}: {describe(exc)}"
    if destructive:
        return OutcomeUnknown(message + " (it may have been applied)", api=api, url=url)
    if budget_spent and isinstance(exc, httpx.TimeoutException):
        return DeadlineReached(message + " (the time budget ran out)", code="DeadlineReached", api=api, url=url)
    return TransportFailure(message, api=api, url=url)


def _unsent(message: str, api: str, url: str) -> TransportFailure:
    failure = TransportFailure(message, api=api, url=url)
    failure.unsent = True  # type: ignore[attr-defined]  # never reached the server: safe to send again
    return failure


def _kind(api: str, body: dict[str, Any]) -> str:
    """The crash-point kind of a request: stop, delete, poll, list, detail, bss-query, bss-unsubscribe."""
    if api == "batch-jobs":
        jobs = body.get("jobs") or [{}]
        return "delete" if jobs[0].get("delete_type") == "delete" else "stop"
    return {"batch-status": "poll", "batch-detail": "detail"}.get(api, api)


def _from_auth_error(api: str, exc: AuthError, url: str) -> DrsError:
    """IAM trouble as the DRS layer's own errors: unavailable is retryable, a refusal is an AuthFailure."""
    message = f"{api}: no token: {exc}"
    if exc.retryable:
        failure = _unsent(message, api, url)
        failure.code, failure.http_status, failure.request_id = "IAM", exc.status_code, exc.request_id
        return failure
    return AuthFailure(message, code="IAM", http_status=exc.status_code, request_id=exc.request_id, api=api,
                       url=url)


async def _log_request(request: httpx.Request) -> None:
    # Runs after authentication, so the auth headers are present: every secret one is masked.
    if log.isEnabledFor(logging.INFO):
        log.info("request %s %s headers=%s", request.method, request.url.path, mask_headers(request.headers), extra={
            "event": "http_request", "method": request.method, "path": request.url.path,
            "headers": mask_headers(request.headers)})
