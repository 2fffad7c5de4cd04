"""Several targets: one DrsClient per (endpoint, project), one auth per project from the one credential source,
and one pacing budget per endpoint shared by that endpoint's clients."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from orchestrator.clock import FakeClock, RealClock
from orchestrator.drs.aksk import AkSkAuth
from orchestrator.drs.auth import TokenAuth, resolve_target_credentials
from orchestrator.drs.client import DrsClient
from orchestrator.drs.iam import IamPasswordAuth
from orchestrator.drs.pacing import process_pacer
from orchestrator.errors import CredentialError
from tests.drs.mock import JOB, status_ok

A = "a" * 32
B = "b" * 32
IAM = "https://iam.example.test"
IAM_ENV = {"DRS_TEARDOWN_IAM_USER": "alice", "DRS_TEARDOWN_IAM_PASSWORD": "pw-distinctive-0",
           "DRS_TEARDOWN_IAM_DOMAIN": "acme"}
AKSK_ENV = {"HUAWEICLOUD_SDK_AK": "HPUAEXAMPLEAK0000000", "HUAWEICLOUD_SDK_SK": "sk" * 20}


class World:
    """IAM issuing one token per project scope (counted), and DRS answering with who asked."""

    def __init__(self) -> None:
        self.scopes: list[str] = []
        self.drs: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "iam.example.test":
            scope = json.loads(request.content)["auth"]["scope"]["project"]["id"]
            self.scopes.append(scope)
            return httpx.Response(201, headers={"X-Subject-Token": f"tok-{scope[:4]}"},
                                  json={"token": {"expires_at": "2099-01-01T00:00:00Z"}})
        self.drs.append(request)
        return status_ok()


def _read_both(auths: dict[str, object], world: World) -> None:
    async def main() -> None:
        for project, endpoint in ((A, "https://drs.r1.example.test"), (B, "https://drs.r2.example.test")):
            async with DrsClient(endpoint, project, auth=auths[project], transport=httpx.MockTransport(world),
                                 clock=FakeClock()) as client:  # type: ignore[arg-type]
                for _ in range(2):
                    assert (await client.status_chunk([JOB]))[JOB].ok

    asyncio.run(main())


def test_iam_password_fetches_one_project_scoped_token_per_target() -> None:
    auths = resolve_target_credentials(IAM_ENV, None, project_ids=[A, B, A], iam_endpoint=IAM)
    assert set(auths) == {A, B} and all(isinstance(a, IamPasswordAuth) for a in auths.values())
    assert auths[A] is not auths[B]
    world = World()
    _read_both(auths, world)
    assert world.scopes == [A, B]  # one token each, reused by the second call
    assert [r.headers["X-Auth-Token"] for r in world.drs] == ["tok-aaaa"] * 2 + ["tok-bbbb"] * 2
    assert [r.url.path.split("/")[2] for r in world.drs] == [A, A, B, B]


def test_iam_token_per_target_from_its_own_regional_iam() -> None:
    auths = resolve_target_credentials(IAM_ENV, None, project_ids=[A, B], iam_endpoint=IAM,
                                       iam_endpoints={B: "https://iam.r2.example.test"})
    assert isinstance(auths[B], IamPasswordAuth) and auths[B].endpoint == "https://iam.r2.example.test"
    pinned = resolve_target_credentials({**IAM_ENV, "DRS_TEARDOWN_IAM_ENDPOINT": IAM}, None, project_ids=[A, B],
                                        iam_endpoint=IAM, iam_endpoints={B: "https://iam.r2.example.test"})
    assert {a.endpoint for a in pinned.values()} == {IAM}  # type: ignore[attr-defined]  # the setting wins


def test_aksk_serves_every_target_with_its_project_header() -> None:
    auths = resolve_target_credentials(AKSK_ENV, None, project_ids=[A, B], iam_endpoint=IAM)
    assert all(isinstance(a, AkSkAuth) for a in auths.values())
    assert auths[A].identity == auths[B].identity
    world = World()
    _read_both(auths, world)
    assert [r.headers["X-Project-Id"] for r in world.drs] == [A, A, B, B] and world.scopes == []


def test_a_single_token_with_several_projects_is_refused_before_any_call() -> None:
    env = {"DRS_TEARDOWN_AUTH_TOKEN": "tok-" + "x" * 20}
    with pytest.raises(CredentialError, match="2 projects") as info:
        resolve_target_credentials(env, None, project_ids=[A, B], iam_endpoint=IAM)
    assert "x" * 20 not in str(info.value)
    one = resolve_target_credentials(env, None, project_ids=[A, A], iam_endpoint=IAM)
    assert list(one) == [A] and isinstance(one[A], TokenAuth)


def test_one_pacing_budget_per_endpoint() -> None:
    clock = RealClock()
    r1 = process_pacer(clock, 180, key="https://drs.r1.example.test")
    assert process_pacer(clock, 180, key="https://drs.r1.example.test/") is r1  # the endpoint's clients share it
    assert process_pacer(clock, 180, key="https://drs.r2.example.test") is not r1
    r1.throttled("batch-status", 1.0)
    assert process_pacer(clock, 180, key="https://drs.r2.example.test").rate("batch-status") == 180
    assert process_pacer(FakeClock(), 180, key="x") is not process_pacer(FakeClock(), 180, key="x")
