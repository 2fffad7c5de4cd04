"""What the service's words mean for teardown: the 29 task statuses (reference/drs-api.md §8) and the error codes
(§10), each mapped to the class the engine decides on. The one classifier of both."""

from __future__ import annotations

import enum


class StatusClass(enum.Enum):
    """What a remote status means for teardown."""

    DELETABLE = "deletable"  # delete may be sent
    GONE = "gone"  # already deleted
    WAIT = "wait"  # the service is moving the task; poll again
    STOPPABLE = "stoppable"  # send terminate (or force_terminate)
    RELEASE_FAILED = "release_failed"  # a stop failed: retry, then escalate
    UNKNOWN = "unknown"  # not one of the 29: fail closed


ALL_STATUSES: tuple[str, ...] = (
    "CREATING",
    "CREATE_FAILED",
    "CONFIGURATION",
    "STARTJOBING",
    "WAITING_FOR_START",
    "START_JOB_FAILED",
    "PAUSING",
    "FULL_TRANSFER_STARTED",
    "FULL_TRANSFER_FAILED",
    "FULL_TRANSFER_COMPLETE",
    "INCRE_TRANSFER_STARTED",
    "INCRE_TRANSFER_FAILED",
    "RELEASE_RESOURCE_STARTED",
    "RELEASE_RESOURCE_FAILED",
    "RELEASE_RESOURCE_COMPLETE",
    "REBUILD_NODE_STARTED",
    "REBUILD_NODE_FAILED",
    "CHANGE_JOB_STARTED",
    "CHANGE_JOB_FAILED",
    "DELETED",
    "CHILD_TRANSFER_STARTING",
    "CHILD_TRANSFER_STARTED",
    "CHILD_TRANSFER_COMPLETE",
    "CHILD_TRANSFER_FAILED",
    "RELEASE_CHILD_TRANSFER_STARTED",
    "RELEASE_CHILD_TRANSFER_COMPLETE",
    "NODE_UPGRADE_START",
    "NODE_UPGRADE_COMPLETE",
    "NODE_UPGRADE_FAILED",
)

# Documented (HW-DEL): the only statuses in which delete is accepted.
DELETABLE: frozenset[str] = frozenset(
    {"CREATE_FAILED", "RELEASE_RESOURCE_COMPLETE", "RELEASE_CHILD_TRANSFER_COMPLETE"}
)
GONE: frozenset[str] = frozenset({"DELETED"})
# Transitional: the service moves these on by itself.
WAIT: frozenset[str] = frozenset(
    {
        "CREATING",
        "STARTJOBING",
        "RELEASE_RESOURCE_STARTED",
        "REBUILD_NODE_STARTED",
        "CHANGE_JOB_STARTED",
        "CHILD_TRANSFER_STARTING",
        "RELEASE_CHILD_TRANSFER_STARTED",
        "NODE_UPGRADE_START",
    }
)
RELEASE_FAILED = "RELEASE_RESOURCE_FAILED"
STOPPABLE: frozenset[str] = frozenset(ALL_STATUSES) - DELETABLE - GONE - WAIT - {RELEASE_FAILED}

# Error codes that mean the task does not exist (any more).
NOT_FOUND_CODES: frozenset[str] = frozenset({"DRS.M00289", "DRS.M05004", "DRS.M05003"})


def reads_gone(status: str | None, error_code: str | None) -> bool:
    """A reading that shows the task gone: status DELETED, or a code that says it does not exist (any more)."""
    return error_code in NOT_FOUND_CODES or status in GONE


def classify(status: str | None) -> StatusClass:
    """Map a remote status to its teardown class; anything unrecognised is UNKNOWN (fail closed)."""
    if status in DELETABLE:
        return StatusClass.DELETABLE
    if status in GONE:
        return StatusClass.GONE
    if status in WAIT:
        return StatusClass.WAIT
    if status == RELEASE_FAILED:
        return StatusClass.RELEASE_FAILED
    if status in STOPPABLE:
        return StatusClass.STOPPABLE
    return StatusClass.UNKNOWN



BUSY_CODES = frozenset({"DRS.M01504"})
THROTTLE_CODES = frozenset({"APIGW.0308", "DRS.M01503"})
CHILD_CODES = frozenset({"DRS.M00308"})
INVALID_PARAMETER_CODES = frozenset({"DRS.M00202"})


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
