"""The /_sim/ endpoints (no auth): the in-process inspection and knobs over HTTP, for a simulator in another
process (`simulator serve`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from .jobs import JobSpec


class Inspectable(Protocol):
    """What the endpoints read and set on a Simulator."""

    @property
    def jobs(self) -> dict[str, dict[str, Any]]: ...
    def counters(self) -> dict[str, Any]: ...
    def log(self, name: str) -> Any: ...
    def add_job(self, spec: JobSpec) -> str: ...
    def expire_tokens(self) -> None: ...
    def reset_counters(self) -> None: ...
    def unsubscribe(self, job_id: str) -> str: ...
    def set_fault(self, route: str, fault: str, times: int | None = 1, **params: Any) -> None: ...
    def clear_faults(self, route: str | None = None) -> None: ...
    def knobs(self) -> list[dict[str, Any]]: ...
    def drift(self, job_id: str, change: str, after_reads: int = 0) -> None: ...
    def refuse_unsubscribe(self, job_id: str, code: str = ..., message: str = "", times: int = 1) -> None: ...
    def configure(self, **changes: Any) -> None: ...


def _body(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def inspect(sim: Inspectable, method: str, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    """Answer one /_sim/ request: (HTTP status, JSON body)."""
    views: dict[str, Callable[[], dict[str, Any]]] = {
        "/_sim/jobs": lambda: {"jobs": sim.jobs},
        "/_sim/violations": lambda: {"violations": dict(sim.log("violations")), "log": sim.log("violation_log")},
        "/_sim/requests": lambda: {"requests": sim.log("requests")},
        "/_sim/destructive-calls": lambda: {"destructive_calls": sim.log("destructive_calls")},
        "/_sim/bss-calls": lambda: {"bss_calls": sim.log("bss_calls")},
        "/_sim/languages": lambda: {"languages": dict(sim.log("languages"))},
        "/_sim/faults": lambda: {"knobs": sim.knobs(), "served": dict(sim.log("faults_served"))},
        "/_sim/counters": sim.counters,
    }
    if method == "GET":
        if path in views:
            return 200, views[path]()
        return 404, {"error": f"no inspection endpoint {method} {path}"}
    if method != "POST":
        return 404, {"error": f"no inspection endpoint {method} {path}"}
    try:
        return _post(sim, path, _body(raw))
    except KeyError as exc:
        return 404, {"error": f"no such task {exc.args[0] if exc.args else ''}"}
    except (TypeError, ValueError) as exc:
        return 400, {"error": str(exc)}


def _post(sim: Inspectable, path: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if path == "/_sim/expire-tokens":
        sim.expire_tokens()
        return 200, {"expired": True}
    if path == "/_sim/reset-counters":
        sim.reset_counters()
        return 200, {"reset": True}
    if path.startswith("/_sim/unsubscribe/"):
        job_id = path.removeprefix("/_sim/unsubscribe/")
        try:
            return 200, {"id": job_id, "status": sim.unsubscribe(job_id)}
        except ValueError as exc:
            return 409, {"error": str(exc)}
    if path == "/_sim/jobs":
        if "tags" in data:
            data["tags"] = tuple(tuple(t) for t in data["tags"])
        return 201, {"id": sim.add_job(JobSpec(**data))}
    if path == "/_sim/faults":
        params = data.get("params") or {}
        sim.set_fault(str(data.get("route")), str(data.get("fault")), data.get("times", 1), **params)
        return 200, {"knobs": sim.knobs()}
    if path == "/_sim/faults/clear":
        sim.clear_faults(data.get("route"))
        return 200, {"knobs": sim.knobs()}
    if path == "/_sim/drift":
        sim.drift(str(data.get("job_id")), str(data.get("change")), int(data.get("after_reads", 0)))
        return 200, {"scripted": True}
    if path == "/_sim/bss-refusals":
        sim.refuse_unsubscribe(str(data.get("job_id")), str(data.get("code", "CBC.30000054")),
                               str(data.get("message", "")), int(data.get("times", 1)))
        return 200, {"refusing": True}
    if path == "/_sim/behaviour":
        sim.configure(**data)
        return 200, {"configured": sorted(data)}
    return 404, {"error": f"no inspection endpoint POST {path}"}
