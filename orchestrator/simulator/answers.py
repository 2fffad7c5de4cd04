"""Bad read answers (issue 12, issue 18): a good answer turned malformed, partial, slow or huge before it goes out."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

from .replies import Reply

# The read-answer faults, by name (each is also a profile rate `<name>_rate` and a knob).
ANSWER_FAULTS: tuple[str, ...] = (
    "not_json",  # 200 with a body that is not JSON
    "truncated",  # 200 with half of the JSON; the framing (Content-Length) is right
    "short_read",  # Content-Length of the whole answer, half of it sent, then the connection closes
    "results_null",  # results (list: jobs) is null
    "array",  # the body is a JSON array (the results list) instead of an object
    "unknown_status",  # one item shows a status that is not one of the 29
    "missing_ids",  # a 200 that leaves one of the asked ids out
    "stale",  # every item shows the status it had before the current one
    "trickle",  # the answer goes out one byte every byte_ms milliseconds
    "freeze",  # the connection is accepted and never answered
    "huge",  # a 200 of `mib` MiB, streamed (never built in memory)
)
UNKNOWN_STATUS = "SUSPENDED_BY_OPERATOR"
_NOT_JSON = b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>"
_CHUNK = 64 * 1024


def _items_key(body: dict[str, Any]) -> str:
    return "jobs" if "jobs" in body else "results"


def distort(kind: str, reply: Reply, rng: random.Random, params: dict[str, Any]) -> Reply:
    """The same answer with one fault applied (only 2xx object bodies are touched; others go out as they are)."""
    body = reply.body
    if not isinstance(body, dict) or reply.status >= 300:
        return reply
    key = _items_key(body)
    items = body.get(key)
    if kind == "not_json":
        reply.raw = _NOT_JSON
    elif kind == "truncated":
        full = reply.payload()
        reply.raw = full[: max(1, len(full) // 2)]
    elif kind == "short_read":
        reply.mode = "short_read"
    elif kind == "results_null":
        body[key] = None
    elif kind == "array":
        reply.body = items if isinstance(items, list) else []
    elif kind == "unknown_status" and isinstance(items, list) and items:
        with_status = [i for i in items if isinstance(i, dict) and "status" in i and not i.get("error_code")]
        if with_status:
            rng.choice(with_status)["status"] = UNKNOWN_STATUS
    elif kind == "missing_ids" and isinstance(items, list) and items:
        items.pop(rng.randrange(len(items)))
        if "count" in body:
            body["count"] = len(items)
    elif kind == "trickle":
        reply.mode = "trickle"
        reply.byte_ms = float(params.get("byte_ms", 50.0))
    elif kind == "freeze":
        reply.mode = "freeze"
        reply.freeze_seconds = float(params.get("seconds", 0.0))
    elif kind == "huge":
        reply.mode = "stream"
        reply.stream = huge_body(body, float(params.get("mib", 32.0)))
    return reply


def huge_body(body: dict[str, Any], mib: float) -> Iterator[bytes]:
    """The answer as valid JSON padded to about `mib` MiB, produced chunk by chunk."""
    head = json.dumps(body, ensure_ascii=False)[:-1].encode()
    yield head + b', "padding": "'
    left = max(0, int(mib * 1024 * 1024) - len(head))
    block = b"x" * _CHUNK
    while left > 0:
        n = min(left, _CHUNK)
        yield block[:n]
        left -= n
    yield b'"}'
