"""Fixtures: a simulator on a loopback port, driven by a manual clock, and a thin httpx helper."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from orchestrator.simulator import JobSpec, ManualClock, Simulator

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "test-token"
AK, SK = "HPUAEXAMPLEAK0000000", "exampleSecretKey0000000000000000000000000"
IAM_USER = ("alice", "s3cret-Passw0rd", "acme")


# Building an httpx client loads the CA bundle (~0.1 s); the simulator is plain HTTP, so share one context.
_SSL = ssl.create_default_context()
# One plain client for requests that carry their own headers.
raw = httpx.Client(timeout=5.0, verify=_SSL)


@pytest.fixture(scope="session", autouse=True)
def _close_raw() -> Iterator[None]:
    yield
    raw.close()


class Api:
    """The four DRS calls over real HTTP with a token (each returns the httpx.Response)."""

    def __init__(self, url: str, token: str = TOKEN, project: str = PROJECT) -> None:
        self.url = url
        self.project = project
        self.http = httpx.Client(
            base_url=url,
            timeout=5.0,
            verify=_SSL,
            headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        )

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.http.post(f"/v3/{self.project}{path}", json=body, **kw)

    def list(self, **body: Any) -> httpx.Response:
        return self.post("/jobs", body)

    def status(self, ids: list[str], **page: Any) -> httpx.Response:
        return self.post("/jobs/batch-status", {"jobs": ids, **({"page_req": page} if page else {})})

    def detail(self, ids: list[str], **page: Any) -> httpx.Response:
        return self.post("/jobs/batch-detail", {"jobs": ids, **({"page_req": page} if page else {})})

    def batch(self, *items: tuple[str, str], **kw: Any) -> httpx.Response:
        body = {"jobs": [{"job_id": i, "delete_type": t} for i, t in items]}
        return self.http.request("DELETE", f"/v3/{self.project}/jobs/batch-jobs", json=body, **kw)

    def terminate(self, *ids: str) -> httpx.Response:
        return self.batch(*((i, "terminate") for i in ids))

    def delete(self, *ids: str) -> httpx.Response:
        return self.batch(*((i, "delete") for i in ids))

    def results(self, *ids: str, action: str) -> list[dict[str, Any]]:
        """batch-jobs items and the per-item results (asserting the 202)."""
        r = self.batch(*((i, action) for i in ids))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["count"] == len(body["results"]) == len(ids)
        return list(body["results"])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


SimFactory = Callable[..., tuple[Simulator, Api]]


@pytest.fixture
def make_sim(clock: ManualClock) -> Iterator[SimFactory]:
    """Build and serve simulators (fast profile, manual clock unless given); all stopped at teardown."""
    started: list[tuple[Simulator, Api]] = []

    def factory(**kw: Any) -> tuple[Simulator, Api]:
        kw.setdefault("project_id", PROJECT)
        kw.setdefault("profile", "fast")
        kw.setdefault("clock", clock)
        kw.setdefault("tokens", {TOKEN})
        kw.setdefault("aksk", {AK: SK})
        kw.setdefault("iam_users", {IAM_USER})
        sim = Simulator(**kw)
        url = sim.start()
        api = Api(url)
        started.append((sim, api))
        return sim, api

    yield factory
    for sim, api in started:
        api.http.close()
        sim.stop()


@pytest.fixture
def sim_api(make_sim: SimFactory) -> tuple[Simulator, Api]:
    """An empty world to add tasks to."""
    return make_sim()


def add(sim: Simulator, status: str = "INCRE_TRANSFER_STARTED", **kw: Any) -> str:
    """Add one task in a status (sync/mysql unless told otherwise)."""
    return sim.add_job(JobSpec(status=status, **kw))
