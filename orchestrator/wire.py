"""Wire value types shared by the lifecycle, the store and the client; no HTTP library here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange as recorded: never a header value, token or body."""

    api: str
    method: str
    path: str
    http_status: int | None
    request_id: str | None
    duration_ms: float
    job_ids: tuple[str, ...]
    error_code: str | None
    attempt: int
    at: datetime


Recorder = Callable[[Exchange], None]


@dataclass(frozen=True)
class StopRequest:
    job_id: str
    force: bool = False
    breakpoint: bool = False


@dataclass(frozen=True)
class DeletePermit:
    """Issued only by the lifecycle guard when the freshest observed status is deletable."""

    job_id: str
    observed_status: str
    _token: object = field(repr=False, compare=False, default=None)


_PERMIT_TOKEN = object()


def issue_permit(job_id: str, observed_status: str) -> DeletePermit:
    """The one way to make a DeletePermit; called by the lifecycle guard alone."""
    return DeletePermit(job_id, observed_status, _PERMIT_TOKEN)


def is_genuine(permit: object) -> bool:
    """Was this permit issued by `issue_permit` (the guard), not built by hand?"""
    return isinstance(permit, DeletePermit) and permit._token is _PERMIT_TOKEN
