"""drs-teardown: tear down Huawei Cloud DRS tasks safely and provably.

The public API; everything else is an implementation module. `tests/test_project.py` asserts this list.
"""

__version__ = "0.1.0"

from orchestrator.api import (
    Connection,
    RunSummary,
    connect,
    execute,
    make_client,
    plan,
    summarize,
    tuning_from,
)
from orchestrator.clock import Clock, FakeClock, RealClock
from orchestrator.config import Settings, load_settings
from orchestrator.drs.client import DeletePermit, DrsClient, RetryPolicy, StopRequest
from orchestrator.drs.errors import (
    ApiError,
    AuthFailure,
    DrsError,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    ServerError,
    Throttled,
    TransportFailure,
)
from orchestrator.engine import Engine, EngineAbort, Tuning, start_run
from orchestrator.lifecycle import Lifecycle, TaskState
from orchestrator.planning import Action, Plan, PlanItem, Selection
from orchestrator.store.repo import Context, Store

__all__ = [
    "Action",
    "ApiError",
    "AuthFailure",
    "Clock",
    "Connection",
    "Context",
    "DeletePermit",
    "DrsClient",
    "DrsError",
    "Engine",
    "EngineAbort",
    "FakeClock",
    "Lifecycle",
    "MalformedResponse",
    "OutcomeUnknown",
    "Plan",
    "PlanItem",
    "RealClock",
    "RequestRejected",
    "RetryPolicy",
    "RunSummary",
    "Selection",
    "ServerError",
    "Settings",
    "StopRequest",
    "Store",
    "TaskState",
    "Throttled",
    "TransportFailure",
    "Tuning",
    "__version__",
    "connect",
    "execute",
    "load_settings",
    "make_client",
    "plan",
    "start_run",
    "summarize",
    "tuning_from",
]
