"""Hostile input at the DRS layer: bodies read as a stream under a cap, endpoints that need stripping or do not
parse, no URL password in any error text, and no stray RuntimeWarning when IAM refuses a login."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.drs.endpoints import check_endpoint_url, resolve_endpoints
from orchestrator.drs.reading import MAX_RESPONSE_BYTES, size_text
from orchestrator.errors import ConfigError, MalformedResponse
from tests.drs.mock import JOB, PROJECT, Calls, make_client, status_ok

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_cap_is_16_mib_and_named() -> None:
    assert MAX_RESPONSE_BYTES == 16 * 1024 * 1024 and size_text(MAX_RESPONSE_BYTES) == "16 MiB"


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_cap_is_malformed_and_retried_for_a_read(declared: bool) -> None:
    clock = FakeClock()
    big = b'{"count": 1, "results": [' + b" " * 5000 + b"]}"

    def huge(request: httpx.Request) -> httpx.Response:
        if declared:
            return httpx.Response(200, content=big)  # Content-Length says it all
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(big), 100):
                yield big[i:i + 100]

        return httpx.Response(200, content=chunks())

    calls = Calls(clock, huge, status_ok())
    client, recorded = make_client(calls, clock, max_response_bytes=1024)
    assert asyncio.run(client.status_chunk([JOB]))[JOB].ok
    assert len(calls.requests) == 2 and recorded[0].error_code == "TooLarge"
    calls = Calls(clock, huge)
    client, _ = make_client(calls, clock, max_response_bytes=1024, attempts=2)
    with pytest.raises(MalformedResponse, match=r"answer larger than 1 KiB from https://drs\.example\.test/v3/"):
        asyncio.run(client.status_chunk([JOB]))


CHILD = textwrap.dedent('''
    import asyncio, resource, sys
    import httpx
    from orchestrator.clock import FakeClock
    from orchestrator.drs.client import DrsClient, RetryPolicy
    from orchestrator.errors import MalformedResponse

    CHUNK = b" " * (1 << 20)

    async def body():
        yield b'{"count": 1, "results": ['
        for _ in range(200):  # 200 MiB, never declared
            yield CHUNK
        yield b"]}"

    def handler(request):
        return httpx.Response(200, content=body())

    async def main():
        async with DrsClient("https://drs.example.test", "p" * 32, transport=httpx.MockTransport(handler),
                             clock=FakeClock(), retry=RetryPolicy(attempts=2)) as client:
            try:
                await client.status_chunk(["x"])
            except MalformedResponse as exc:
                print("refused:", exc)

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    asyncio.run(main())
''')


def test_a_200_mib_body_is_refused_in_bounded_memory() -> None:
    """Under an address-space limit far below 200 MiB on top of the interpreter, the body is cut at the cap."""
    probe = subprocess.run([sys.executable, "-c", "import resource, orchestrator.drs.client; "
                            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    assert probe.stdout.strip()
    # Virtual size of a Python with httpx, pydantic and asyncio loaded is ~150-400 MiB (thread arenas, maps);
    # give it that plus 64 MiB: enough for a 16 MiB body, far too little for a 200 MiB one.
    baseline = subprocess.run(
        [sys.executable, "-c", "import orchestrator.drs.client, asyncio, re; "
         "print(int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) >> 10)"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    limit = int(baseline.stdout.strip()) + 64
    child = subprocess.run([sys.executable, "-c", CHILD, str(limit)], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "refused: batch-status: answer larger than 16 MiB" in child.stdout
    assert "MemoryError" not in child.stderr


def test_the_child_would_fail_without_the_cap() -> None:
    """Shows the memory test can fail: the same child reading the whole body dies under the same limit."""
    baseline = subprocess.run(
        [sys.executable, "-c", "import orchestrator.drs.client, asyncio, re; "
         "print(int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) >> 10)"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    limit = int(baseline.stdout.strip()) + 64
    uncapped = CHILD.replace('clock=FakeClock(),', 'clock=FakeClock(), max_response_bytes=1 << 40,')
    child = subprocess.run([sys.executable, "-c", uncapped, str(limit)], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert child.returncode != 0 and "MemoryError" in child.stderr, (child.stdout, child.stderr[-500:])


@pytest.mark.parametrize("raw", ["https://drs.example.test\n", "  https://drs.example.test/  ",
                                 "\thttps://drs.example.test\r\n"])
def test_an_endpoint_from_a_file_is_stripped(raw: str) -> None:
    assert resolve_endpoints(None, raw, None).drs == "https://drs.example.test"
    assert check_endpoint_url(raw, insecure_http=False, what="DRS endpoint") == "https://drs.example.test"
    client = DrsClient(raw, PROJECT, transport=httpx.MockTransport(lambda r: status_ok()), clock=FakeClock())
    assert client.base_url == "https://drs.example.test"
    assert asyncio.run(client.status_chunk([JOB]))[JOB].ok


@pytest.mark.parametrize("bad", ["https://drs.exa mple.test", "https://[::1", "https://drs.example.test:99999",
                                 "drs.example.test", "https://", "https://drs.example.test\n/v3"])
def test_an_endpoint_httpx_cannot_use_is_a_config_error_naming_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="DRS endpoint"):
        DrsClient(bad, PROJECT)
    with pytest.raises(ConfigError, match="DRS endpoint"):
        check_endpoint_url(bad, insecure_http=True, what="DRS endpoint")


@pytest.mark.parametrize("url", ["https://user:pa55word-secret@drs.example.test",
                                 "https://user:pa55word-secret@drs.example.test:bad/",
                                 "https://u:pa55word-secret@[::1"])
def test_no_url_password_in_an_error(url: str) -> None:
    for make in (lambda: check_endpoint_url(url, insecure_http=False, what="DRS endpoint"),
                 lambda: DrsClient(url, PROJECT)):
        with pytest.raises(ConfigError) as info:
            make()
        assert "pa55word-secret" not in str(info.value)


def test_a_refused_iam_login_prints_no_runtime_warning() -> None:
    """Three concurrent list calls (as `plan --all` makes), IAM refusing: the sibling calls still connecting
    were left to asyncio.run's shutdown, and anyio's connect attempt coroutines were never awaited. The client
    now cancels and awaits its in-flight calls when it closes."""
    script = textwrap.dedent('''
        import asyncio, warnings
        warnings.simplefilter("error")
        from orchestrator.simulator import Simulator
        from orchestrator.drs.client import DrsClient
        from orchestrator.drs.iam import IamPasswordAuth
        P = "0123456789abcdef0123456789abcdef"
        sim = Simulator(project_id=P, jobs=3, iam_users=[("acme", "alice", "right-pw")])
        with sim.serve() as url:
            async def main():
                auth = IamPasswordAuth("alice", "wrong-pw", "acme", project_id=P, iam_endpoint=url)
                async with DrsClient(url, P, auth=auth) as client:
                    await asyncio.gather(*(client.list_jobs(k) for k in ("migration", "sync", "cloudDataGuard")))
            try:
                asyncio.run(main())
            except Exception as exc:
                print(type(exc).__name__)
    ''')
    child = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", script], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
    assert child.stdout.strip() == "AuthFailure", child.stderr
    assert "never awaited" not in child.stderr and "RuntimeWarning" not in child.stderr


def test_a_huge_iam_token_answer_is_cut_at_the_cap() -> None:
    """IAM's answer to a token request is read as a stream under the same 16 MiB cap: a hostile or misrouted IAM
    streaming without end costs at most the cap (the rest is never read) and ends in an error naming IAM."""
    from orchestrator.drs.iam import IamPasswordAuth
    from orchestrator.errors import TransportFailure

    served: list[int] = []

    async def endless():  # type: ignore[no-untyped-def]
        yield b'{"token": {"expires_at": "'
        for _ in range(1024):  # 1 GiB, undeclared
            served.append(1)
            yield b"x" * (1 << 20)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/auth/tokens":
            return httpx.Response(201, content=endless())
        return status_ok()

    clock = FakeClock()
    auth = IamPasswordAuth("alice", "pw-secret", "acme", project_id=PROJECT, iam_endpoint="https://iam.example.test",
                           clock=lambda: clock.now())
    client = DrsClient("https://drs.example.test", PROJECT, auth=auth, transport=httpx.MockTransport(handler),
                       clock=clock, retry=RetryPolicy(attempts=2))
    with pytest.raises(TransportFailure, match=r"IAM at https://iam\.example\.test answered a token request with more "
                                          r"than 16 MiB for user acme/alice"):
        asyncio.run(client.status_chunk([JOB]))
    assert len(served) <= 2 * 17  # two attempts, each cut just past 16 MiB of the 1,024 offered


def test_a_huge_401_from_drs_is_read_under_the_cap_by_the_iam_flow() -> None:
    """The IAM flow reads a DRS 401 to see whether the token expired (APIGW.0307): under the cap too, a malformed
    answer like any other (a read is asked again)."""
    from orchestrator.drs.iam import IamPasswordAuth

    served: list[int] = []

    async def endless():  # type: ignore[no-untyped-def]
        for _ in range(1024):
            served.append(1)
            yield b"x" * (1 << 20)

    answers = [httpx.Response(401, content=endless()), status_ok()]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/auth/tokens":
            return httpx.Response(201, json={"token": {"expires_at": "2099-01-01T00:00:00Z"}},
                                  headers={"X-Subject-Token": "tok-" + "x" * 20})
        return answers.pop(0)

    clock = FakeClock()
    auth = IamPasswordAuth("alice", "pw-secret", "acme", project_id=PROJECT, iam_endpoint="https://iam.example.test",
                           clock=lambda: clock.now())
    client = DrsClient("https://drs.example.test", PROJECT, auth=auth, transport=httpx.MockTransport(handler),
                       clock=clock, retry=RetryPolicy(attempts=2))
    assert asyncio.run(client.status_chunk([JOB]))[JOB].ok
    assert len(served) <= 17 and answers == []
