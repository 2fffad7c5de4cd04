"""drs-teardown: tear down Huawei Cloud DRS tasks safely and provably.

The public API; everything else is an implementation module. `tests/test_project.py` asserts this list.
"""

__version__ = "0.1.0"

from orchestrator.api import (  # noqa: E402
    Connection,
    RunSummary,
    connect,
    execute,
    make_client,
    plan,
    summarize,
    tuning_from,
)
from orchestrator.clock import Clock, FakeClock, RealClock  # noqa: E402
from orchestrator.config import Settings, load_settings  # noqa: E402
from orchestrator.drs.client import DeletePermit, DrsClient, RetryPolicy, StopRequest  # noqa: E402
from orchestrator.drs.errors import (  # noqa: E402
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
from orchestrator.engine import Engine, EngineAbort, Tuning, start_run  # noqa: E402
from orchestrator.lifecycle import Lifecycle, TaskState  # noqa: E402
from orchestrator.planning import Action, Plan, PlanItem, Selection  # noqa: E402
from orchestrator.store.repo import Context, Store  # noqa: E402

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
