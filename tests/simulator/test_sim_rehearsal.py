"""A careful reference client tears a seeded world down under `rough` with zero violations.

This proves the simulator's rules can all be met at once (a client that reads before it acts, retries 429/5xx/
dropped connections/DRS.M01504 and never resends blindly ends with no violations), and shows the algorithm
the orchestrator's engine needs.
"""

from __future__ import annotations

from typing import Any

import httpx

from orchestrator.drs.codes import ALL_STATUSES, DELETABLE, RELEASE_FAILED, STOPPABLE
from orchestrator.simulator import ApiFaults, ManualClock, Simulator, load_profile

from .conftest import PROJECT, SimFactory

RETRYABLE = {429, 500, 502, 503}


class CarefulClient:
    """Reads before it acts, retries what is retryable, deletes only what it has seen deletable."""

    def __init__(self, api_http: httpx.Client, clock: ManualClock) -> None:
        self.http = api_http
        self.clock = clock
        self.children: dict[str, list[str]] = {}

    def call(
        self, method: str, path: str, body: dict[str, Any], *, idempotent: bool
    ) -> httpx.Response | None:
        """One call with retries; a lost answer to a non-idempotent call gives None (re-read, not resend)."""
        for _ in range(200):
            self.clock.advance(0.3)  # the client's backoff, in simulated time
            try:
                r = self.http.request(method, f"/v3/{PROJECT}{path}", json=body)
            except httpx.TransportError:
                if idempotent:
                    continue
                return None
            if r.status_code not in RETRYABLE:
                return r
        raise AssertionError("gave up retrying")

    def read(self, path: str, body: dict[str, Any], key: str) -> list[dict[str, Any]]:
        """A read answer's items, asked again until the answer is well-formed (reads are idempotent)."""
        for _ in range(200):
            r = self.call("POST", path, body, idempotent=True)
            assert r is not None and r.status_code in (200, 400), r.text
            try:
                data = r.json()
            except ValueError:
                continue  # not JSON, or cut short: ask again
            items = data.get(key) if isinstance(data, dict) else None
            if isinstance(items, list) and all(isinstance(i, dict) for i in items):
                return items
        raise AssertionError(f"no readable answer from {path}")

    def statuses(self, ids: list[str]) -> dict[str, str | None]:
        """Each id's status (None: gone), asking again for ids an answer left out or showed oddly."""
        out: dict[str, str | None] = {}
        wanted = list(ids)
        for _ in range(200):
            for i in range(0, len(wanted), 100):
                chunk = wanted[i : i + 100]
                body = {"jobs": chunk, "page_req": {"per_page": 0}}
                for item in self.read("/jobs/batch-status", body, "results"):
                    if item.get("error_code"):
                        out[item["id"]] = None
                    elif item.get("status") in ALL_STATUSES:
                        out[item["id"]] = item["status"]
            wanted = [i for i in ids if i not in out]
            if not wanted:
                return out
        raise AssertionError("some ids never read back")

    def targets(self) -> tuple[list[str], set[str]]:
        """Every top-level task and re-edit child; yearly/monthly ones are left for an operator."""
        ids: list[str] = []
        for use in ("migration", "sync", "cloudDataGuard"):
            for job in self.read("/jobs", {"db_use_type": use, "per_page": 0}, "jobs"):
                ids.append(job["id"])
                # Dual-active nodes go with their parent; re-edit sub-tasks are stopped on their own.
                reedit = [
                    c["id"] for c in job["children"] if c["status"].startswith(("CHILD_", "RELEASE_CHILD_"))
                ]
                self.children[job["id"]] = reedit
                ids += reedit
        period: set[str] = set()
        for i in range(0, len(ids), 10):
            body = {"jobs": ids[i : i + 10], "page_req": {"per_page": 10}}
            details = self.read("/jobs/batch-detail", body, "results")
            period |= {d["id"] for d in details if (d.get("period_order") or {}).get("order_id")}
        return [i for i in ids if i not in period], period

    def teardown(self, ids: list[str]) -> None:
        for _ in range(300):
            seen = self.statuses(ids)
            if all(s in (None, "DELETED") for s in seen.values()):
                return
            items = []
            for job_id, status in seen.items():
                if status in DELETABLE and any(seen.get(c) not in (None, "DELETED")
                                               for c in self.children.get(job_id, ())):
                    continue  # a parent goes after its re-edit children, or they stay behind orphaned
                if status in DELETABLE:
                    items.append({"job_id": job_id, "delete_type": "delete"})
                elif status in STOPPABLE:
                    items.append({"job_id": job_id, "delete_type": "terminate"})
                elif status == RELEASE_FAILED:
                    items.append({"job_id": job_id, "delete_type": "force_terminate"})
            if items:
                r = self.call("DELETE", "/jobs/batch-jobs", {"jobs": items[:100]}, idempotent=False)
                assert r is None or r.status_code == 202, r.text
        raise AssertionError("teardown did not converge")


def test_careful_client_under_rough_breaks_no_rule(make_sim: SimFactory, clock: ManualClock) -> None:
    rough = load_profile("rough")
    # rough without its real-time latency: the faults stay, the test stays fast.
    no_latency = {
        k: ApiFaults(**{**v.__dict__, "latency_ms": 0, "latency_jitter_ms": 0})
        for k, v in rough.faults.items()
    }
    sim, api = make_sim(profile=rough.with_overrides(faults=no_latency), jobs=40, seed=7)
    client = CarefulClient(api.http, clock)
    ids, period = client.targets()
    assert period  # the seeded world has yearly/monthly tasks; an operator must unsubscribe them
    client.teardown(ids)
    assert sim.violations == {}, sim.violation_log
    for job_id in period:
        sim.unsubscribe(job_id)
    client.teardown(sorted(period))
    assert sim.violations == {}
    assert all(j["status"] == "DELETED" for j in sim.jobs.values())
    assert any(r["dropped"] for r in sim.requests) and any(
        c["error_code"] == "DRS.M01504" for c in sim.destructive_calls
    )


def test_calm_demo_world_tears_down(clock: ManualClock) -> None:
    sim = Simulator(seed=0, jobs=40, clock=clock, tokens={"t"})
    with sim.serve() as url, httpx.Client(base_url=url, headers={"X-Auth-Token": "t"}) as http:
        client = CarefulClient(http, clock)
        ids, _ = client.targets()
        client.teardown(ids)
    assert sim.violations == {}
    assert {sim.status_of(i) for i in ids} <= {"DELETED", None}
