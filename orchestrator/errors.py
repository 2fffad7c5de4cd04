"""The one error tree. Every class carries the exit code a user sees; the CLI catches `TeardownError` once.

    TeardownError (1)             base: anything drs-teardown raises on purpose
    ├── UsageError (1)            the input is wrong; the message names it and nothing was touched
    │   ├── ConfigError           settings, config file, environment, endpoints
    │   │   └── CredentialError   credentials missing, ambiguous or incomplete
    │   │       └── AuthError     IAM did not issue a token (refused, failed or unreachable)
    │   ├── SelectionError        ids, jobs files, filters, plan files, targets files
    │   └── RunBusy               another live process works this run (names the holder)
    ├── Refused (2)               a safety rail said no (confirmation, drift, --max-targets, overlap); nothing sent
    ├── StoreError (4)            the database could not be opened, migrated, read or written
    │   ├── LeaseLost             another worker holds the task now (our lease expired)
    │   └── StoreLost             the database file vanished or was replaced under a running run
    ├── EngineAbort (1)           the run cannot go on (credentials refused, ...); it stays resumable
    ├── LifecycleError (1)        a trigger that may not fire: a bug, never a user's doing
    │   ├── GuardRefused          its condition did not hold (for delete: the status is not deletable)
    │   └── InvalidTransition     not allowed from the task's state
    ├── Interrupted (130)         a signal stopped the command; the run is resumable
    ├── RunTimedOut (3)           --timeout passed before the run was planned; nothing more is sent, resumable
    └── DrsError (1)              the DRS layer (HTTP, IAM, BSS)
        ├── TransportFailure      no usable answer (connection refused/reset, timeout); retryable for reads
        │   ├── OutcomeUnknown    a destructive request may or may not have been applied: read before re-sending
        │   └── DeadlineReached   the time budget ran out before an answer (reads only)
        ├── ApiError              the service answered with an error status
        │   ├── Throttled         429 / APIGW.0308 / DRS.M01503 / a whole-request DRS.M01504: retry after a pause
        │   ├── ServerError       5xx: retryable for reads
        │   ├── AuthFailure       401 / 403: fatal, fix the credentials
        │   └── RequestRejected   400 and other 4xx: fatal for the request as sent
        └── MalformedResponse     the body is not what the API documents: retried for reads, fail closed otherwise
"""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INCOMPLETE, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class TeardownError(Exception):
    """Base of every error drs-teardown raises on purpose."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str = "", *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TeardownError):
    """The input is wrong; the message names it."""


class ConfigError(UsageError, ValueError):
    """The configuration cannot work as given; the message names the setting and how to fix it."""


class CredentialError(ConfigError):
    """Credentials missing, ambiguous or incomplete; the message names the settings, never a secret."""


class AuthError(CredentialError):
    """IAM did not issue a token (refused, failed or unreachable)."""

    def __init__(self, message: str, *, endpoint: str, user: str, status_code: int | None = None,
                 request_id: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.user = user
        self.status_code = status_code
        self.request_id = request_id
        # True for 5xx, 429 and connection failures: trying again later may work.
        self.retryable = retryable


class SelectionError(UsageError, ValueError):
    """A selection the user got wrong; the message names the input."""


class RunBusy(UsageError):
    """Another live process works this run; the message names it (pid, host, since)."""


class Refused(TeardownError):
    """A safety rail refused; nothing was sent."""

    exit_code = 2


class StoreError(TeardownError):
    """The database could not be opened, migrated, read or written."""

    exit_code = 4


class LeaseLost(StoreError):
    """Another worker holds the task now (our lease expired)."""


class StoreLost(StoreError):
    """The database file this run writes vanished or was replaced."""


class EngineAbort(TeardownError):
    """The run cannot go on (credentials refused, ...); it stays resumable."""


class LifecycleError(TeardownError):
    """A trigger that may not fire now."""


class GuardRefused(LifecycleError):
    """A trigger's condition did not hold (for `delete`: the last observed status is not deletable)."""


class InvalidTransition(LifecycleError):
    """A trigger that is not allowed from the task's current state."""


class Interrupted(TeardownError):
    """A signal stopped the command; whatever run it worked is resumable."""

    exit_code = 130


class RunTimedOut(TeardownError):
    """The command's --timeout passed while the run was still being planned: it stops, stays resumable, exit 3."""

    exit_code = EXIT_INCOMPLETE

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.document = {"run_id": run_id} if run_id else {}


class DrsError(TeardownError):
    """Base of every error raised by the DRS layer."""

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 request_id: str | None = None, api: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.api = api
        self.url = url


class TransportFailure(DrsError):
    """No usable answer came back."""


class OutcomeUnknown(TransportFailure):
    """A destructive request may have been applied: never re-send blindly, read the status first."""


class DeadlineReached(TransportFailure):
    """The run's (or the call's) time budget ran out before an answer; a destructive call raises OutcomeUnknown."""


class ApiError(DrsError):
    """The service answered with an error status."""


class Throttled(ApiError):
    """The gateway or the service asked us to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(ApiError):
    """A 5xx answer."""

    retry_after: float | None = None  # a 503 may say when to come back


class AuthFailure(ApiError):
    """401/403: the credentials were refused."""


class RequestRejected(ApiError):
    """A 4xx answer for the request as sent."""


class MalformedResponse(DrsError):
    """The body does not have the documented shape."""
