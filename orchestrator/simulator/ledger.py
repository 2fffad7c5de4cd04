"""What the simulator counts about its clients: broken rules, destructive and BSS calls, languages, faults served."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import Any

# Every rule a client can break (the keys of Simulator.violations).
VIOLATIONS: tuple[str, ...] = (
    "delete_not_deletable",
    "action_on_deleted",
    "action_on_period_order",
    "child_id",
    "unknown_job_action",
    "redundant_stop",
    "bad_request",
    "unauthenticated",
    "parent_deleted_with_live_children",
    "repeated_unsubscribe",
    "unsubscribe_unknown_resource",
)


class Ledger:
    """Counters and logs, each read and written under one lock (server threads write, tests read)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.violations: Counter[str] = Counter()
        self.violation_log: list[dict[str, Any]] = []
        self.destructive_calls: list[dict[str, Any]] = []
        self.bss_calls: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.languages: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.drift_refusals: list[dict[str, Any]] = []

    def violate(self, rule: str, job_id: str | None, detail: str, at: datetime) -> None:
        """Count one broken rule (and keep a line saying which task and why)."""
        with self.lock:
            self.violations[rule] += 1
            self.violation_log.append({"rule": rule, "job_id": job_id, "detail": detail, "at": at.isoformat()})

    def excuse(self, job_id: str, detail: str, at: datetime) -> None:
        """A refusal caused by a change of the world the client could not yet have seen."""
        with self.lock:
            self.drift_refusals.append({"job_id": job_id, "detail": detail, "at": at.isoformat()})

    def destructive(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.destructive_calls.append(entry)

    def bss(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.bss_calls.append(entry)

    def request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def language(self, header: str | None) -> None:
        """Count the X-Language a request carried ("" when it had none)."""
        with self.lock:
            self.languages[(header or "").strip().lower()] += 1

    def fault(self, route: str, kind: str) -> None:
        with self.lock:
            self.faults_served[f"{route}:{kind}"] += 1

    def bss_counts(self) -> dict[str, dict[str, int]]:
        """order id -> {"query": n, "unsubscribe": m} (unsubscribe counted per order its resources belong to)."""
        out: dict[str, Counter[str]] = {}
        with self.lock:
            for call in self.bss_calls:
                for order_id in call.get("order_ids", ()):
                    out.setdefault(order_id, Counter())[call["call"]] += 1
        return {k: dict(v) for k, v in out.items()}

    def snapshot(self, name: str) -> Any:
        """A copy of one counter or log, taken under the lock."""
        with self.lock:
            value = getattr(self, name)
            if isinstance(value, Counter):
                return Counter(value)
            return [dict(x) for x in value]

    def reset(self) -> None:
        with self.lock:
            for value in (self.violations, self.languages, self.faults_served):
                value.clear()
            for log in (self.violation_log, self.destructive_calls, self.bss_calls, self.requests,
                        self.drift_refusals):
                log.clear()
