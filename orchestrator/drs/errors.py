"""The DRS error tree and the classification teardown decides on.

    DrsError                      anything the DRS layer raises
    ├── TransportFailure          no usable answer (connection refused/reset, timeout); retryable for reads
    │   └── OutcomeUnknown        a destructive request may or may not have been applied: reconcile by reading
    ├── ApiError                  the service answered with an error status
    │   ├── Throttled             429 / APIGW.0308 / DRS.M01503: retry after a pause
    │   ├── ServerError           5xx: retryable for reads
    │   ├── AuthFailure           401 / 403: fatal, fix the credentials
    │   └── RequestRejected       400 and other 4xx: fatal for the request as sent
    └── MalformedResponse         the body is not what the API documents: fail closed
"""

from __future__ import annotations

import enum

from orchestrator.drs.statuses import NOT_FOUND_CODES

BUSY_CODES = frozenset({"DRS.M01504"})
THROTTLE_CODES = frozenset({"APIGW.0308", "DRS.M01503"})
CHILD_CODES = frozenset({"DRS.M00308"})


class ErrorClass(enum.Enum):
    """How the engine treats a per-item or whole-request error."""

    RETRYABLE = "retryable"  # try the same thing again after a pause
    BUSY = "busy"  # the task is mid-operation: try again later
    GONE = "gone"  # the task does not exist (any more)
    FATAL = "fatal"  # will not succeed as is


def classify_code(code: str | None) -> ErrorClass:
    """Classify a DRS/APIGW error code."""
    if code in BUSY_CODES:
        return ErrorClass.BUSY
    if code in THROTTLE_CODES:
        return ErrorClass.RETRYABLE
    if code in NOT_FOUND_CODES:
        return ErrorClass.GONE
    return ErrorClass.FATAL


class DrsError(Exception):
    """Base of every error raised by the DRS layer."""

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 request_id: str | None = None, api: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.api = api


class TransportFailure(DrsError):
    """No usable answer came back."""


class OutcomeUnknown(TransportFailure):
    """A destructive request may have been applied: never re-send blindly, read the status first."""


class ApiError(DrsError):
    """The service answered with an error status."""


class Throttled(ApiError):
    """The gateway or the service asked us to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(ApiError):
    """A 5xx answer."""


class AuthFailure(ApiError):
    """401/403: the credentials were refused."""


class RequestRejected(ApiError):
    """A 4xx answer for the request as sent."""


class MalformedResponse(DrsError):
    """The body does not have the documented shape."""
