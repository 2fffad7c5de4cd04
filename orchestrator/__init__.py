"""drs-teardown: tear down Huawei Cloud DRS tasks safely and provably.

The public API; everything else is an implementation module. `tests/test_project.py` asserts this list.
Names load on first use (PEP 562), so `python -m orchestrator.<module>` runs without importing the rest.
"""

import importlib

from orchestrator.version import __version__  # noqa: F401 (the face: in __all__)

_WHERE = {
    "Action": "orchestrator.planning",
    "ApiError": "orchestrator.errors",
    "AuthFailure": "orchestrator.errors",
    "Clock": "orchestrator.clock",
    "Connection": "orchestrator.usecases",
    "Context": "orchestrator.store.repo",
    "DeletePermit": "orchestrator.wire",
    "DrsClient": "orchestrator.drs.client",
    "DrsError": "orchestrator.errors",
    "Engine": "orchestrator.engine",
    "EngineAbort": "orchestrator.errors",
    "FakeClock": "orchestrator.clock",
    "Lifecycle": "orchestrator.lifecycle",
    "MalformedResponse": "orchestrator.errors",
    "OutcomeUnknown": "orchestrator.errors",
    "Plan": "orchestrator.planning",
    "PlanItem": "orchestrator.planning",
    "RealClock": "orchestrator.clock",
    "Refused": "orchestrator.errors",
    "RequestRejected": "orchestrator.errors",
    "RetryPolicy": "orchestrator.drs.client",
    "RunBusy": "orchestrator.errors",
    "RunPlan": "orchestrator.usecases",
    "RunSummary": "orchestrator.usecases",
    "Selection": "orchestrator.selection",
    "ServerError": "orchestrator.errors",
    "Settings": "orchestrator.config",
    "StopRequest": "orchestrator.wire",
    "Store": "orchestrator.store.repo",
    "Target": "orchestrator.selection",
    "TaskState": "orchestrator.lifecycle",
    "Teardown": "orchestrator.usecases",
    "TeardownError": "orchestrator.errors",
    "Throttled": "orchestrator.errors",
    "TransportFailure": "orchestrator.errors",
    "Tuning": "orchestrator.engine",
    "UsageError": "orchestrator.errors",
    "connect": "orchestrator.usecases",
    "execute": "orchestrator.usecases",
    "load_settings": "orchestrator.config",
    "make_client": "orchestrator.usecases",
    "new_context": "orchestrator.usecases",
    "parse_targets_file": "orchestrator.selection",
    "pick_run": "orchestrator.usecases",
    "prepare_resume": "orchestrator.usecases",
    "start_run": "orchestrator.usecases",
    "summarize": "orchestrator.usecases",
    "tuning_from": "orchestrator.usecases",
    "work_runs": "orchestrator.usecases",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
