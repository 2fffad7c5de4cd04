"""What passes between the HTTP server and the gateway: a request as received, and how to answer it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json;charset=UTF-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request: headers keyed lower-case; body None when it was larger than the gateway allows."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes | None
    request_id: str


@dataclass
class Reply:
    """How to answer: a JSON body (or exact bytes, or a stream), and how the bytes go out.

    mode: "normal"; "drop" (close without a byte); "short_read" (announce the whole length, send half, close);
    "trickle" (one byte every byte_ms milliseconds); "freeze" (accept, never answer: hold until the client
    leaves, the server stops or freeze_seconds pass, then close); "stream" (chunked, from `stream`).
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    mode: str = "normal"
    byte_ms: float = 0.0
    freeze_seconds: float = 0.0
    stream: Iterable[bytes] | None = None
    content_type: str = JSON_TYPE

    def payload(self) -> bytes:
        """The bytes of the body (not for streams)."""
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False).encode()
