"""Reading an answer: the body streamed and cut at a cap, JSON, the wire models, the error body, Retry-After,
and what an error status means (the error class of `orchestrator.errors` it becomes). No I/O but the stream."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from orchestrator.drs.codes import BUSY_CODES, THROTTLE_CODES
from orchestrator.drs.models import ErrorBody
from orchestrator.errors import (
    ApiError,
    AuthFailure,
    DrsError,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    ServerError,
    Throttled,
)

# No DRS or BSS answer teardown reads comes near this (a 100-id batch-status page is ~10 KiB, a 10-id
# batch-detail page well under 1 MiB); anything larger is a hostile or broken answer, not data.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# The service's own message is quoted in error texts as it came, up to this many characters.
MAX_MESSAGE_CHARS = 1000

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Reply:
    """One answer, read to the end (at most the cap): status, headers, body and the URL it came from."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    @property
    def request_id(self) -> str | None:
        return self.headers.get("X-Request-Id")


def size_text(limit: int) -> str:
    """16 MiB, 512 KiB, 100 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


def too_large(api: str, url: str, limit: int, status: int) -> MalformedResponse:
    return MalformedResponse(f"{api}: answer larger than {size_text(limit)} from {url}", code="TooLarge",
                             http_status=status, api=api, url=url)


async def read_capped(response: httpx.Response, *, api: str, url: str, limit: int) -> bytes:
    """The (decoded) body, read as a stream; MalformedResponse as soon as it would pass `limit` bytes."""
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise too_large(api, url, limit, response.status_code)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > limit:
            raise too_large(api, url, limit, response.status_code)
        body += chunk
    return bytes(body)


def malformed(api: str, reply: Reply, why: str) -> MalformedResponse:
    return MalformedResponse(f"{api}: HTTP {reply.status} {why}", http_status=reply.status,
                             api=api, url=reply.url, request_id=reply.request_id)


def parse_json(api: str, reply: Reply) -> Any:
    """The body as JSON, or MalformedResponse (not JSON, not UTF-8, nested beyond reason)."""
    try:
        return json.loads(reply.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = "with an empty body" if not reply.body.strip() else "with a body that is not JSON"
        raise malformed(api, reply, why) from exc


def validate(api: str, reply: Reply, model: type[M], payload: Any) -> M:
    """The payload as `model`, or MalformedResponse naming the first field that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise malformed(api, reply, f"that is malformed ({where}: {first['msg']})") from exc


def check_ids(api: str, reply: Reply, asked: Sequence[str], got: Sequence[str]) -> None:
    """An answer naming an id that was not asked for, or one id twice, is malformed (ids missing are not)."""
    unexpected = set(got) - set(asked)
    if unexpected or len(got) != len(set(got)):
        raise malformed(api, reply, "that names ids that were not asked for or repeats one")


def error_body(reply: Reply) -> ErrorBody:
    try:
        return ErrorBody.parse_any(json.loads(reply.body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ErrorBody()


def error_code(reply: Reply) -> str:
    return error_body(reply).error_code or f"HTTP{reply.status}"


def results_listed(reply: Reply) -> Any:
    """The JSON of a 400 that still has the results shape (batch-detail on a missing id, §10.4), else None."""
    try:
        payload = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("results"), list) and payload["results"]:
        return payload
    return None


def retry_after(reply: Reply, now: datetime) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP-date; None if absent or unreadable."""
    value = reply.headers.get("Retry-After", "").strip()
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


def quoted(message: str | None) -> str:
    """The service's message as it came (UTF-8, any language), cut to a sane length."""
    if not message:
        return ""
    text = " ".join(message.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def error_for(api: str, reply: Reply, *, destructive: bool, now: datetime) -> DrsError | None:
    """What an error status means, as an error of the one tree; None for a success (< 400)."""
    status = reply.status
    if status < 400:
        return None
    err = error_body(reply)
    detail = f"{api}: HTTP {status}"
    if err.error_code:
        detail += f" {err.error_code}"
    if err.error_msg:
        detail += f" {quoted(err.error_msg)}"
    kw: dict[str, Any] = {"code": err.error_code, "http_status": status, "request_id": reply.request_id,
                          "api": api, "url": reply.url}
    wait = retry_after(reply, now)
    if status == 429 or err.error_code in THROTTLE_CODES or err.error_code in BUSY_CODES:
        # Throttled, or the whole request refused as busy ("another operation is in progress"): not applied.
        return Throttled(detail, retry_after=wait, **kw)
    if status in (401, 403):
        return AuthFailure(detail, **kw)
    if status >= 500:
        if destructive:
            return OutcomeUnknown(detail, **kw)
        error = ServerError(detail, **kw)
        error.retry_after = wait  # a 503 may say when to come back
        return error
    return RequestRejected(detail, **kw)


def is_throttle(error: ApiError) -> bool:
    """A throttle proper (429 / APIGW.0308 / DRS.M01503), as opposed to a whole-request busy answer."""
    return isinstance(error, Throttled) and error.code not in BUSY_CODES
