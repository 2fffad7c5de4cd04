"""drs-teardown: tear down Huawei Cloud DRS tasks safely and provably.

The public API; everything else is an implementation module. `tests/test_project.py` asserts this list.
"""


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
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.engine import Engine, Tuning, start_run
from orchestrator.errors import (
    ApiError,
    AuthFailure,
    DrsError,
    EngineAbort,
    MalformedResponse,
    OutcomeUnknown,
    RequestRejected,
    ServerError,
    Throttled,
    TransportFailure,
)
from orchestrator.lifecycle import Lifecycle, TaskState
from orchestrator.planning import Action, Plan, PlanItem, Selection
from orchestrator.store.repo import Context, Store
from orchestrator.version import __version__
from orchestrator.wire import DeletePermit, StopRequest

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
