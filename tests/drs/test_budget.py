"""The time budget (`client.deadline`) bounds every call with its retries and Retry-After waits; every transport
error names the URL and the cause. Fake clock for the logic; real loopback servers for real time."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from orchestrator.clock import FakeClock, RealClock
from orchestrator.drs.client import DrsClient, RetryPolicy
from orchestrator.errors import DeadlineReached, OutcomeUnknown, Throttled, TransportFailure
from orchestrator.wire import StopRequest, issue_permit
from tests.drs.mock import JOB, PROJECT, Calls, error, jobs_ok, make_client, status_ok


def test_no_call_starts_once_the_budget_is_spent() -> None:
    clock = FakeClock()
    calls = Calls(clock, status_ok())
    client, _ = make_client(calls, clock)
    client.deadline = clock.monotonic()  # settable after construction
    with pytest.raises(DeadlineReached) as info:
        asyncio.run(client.status_chunk([JOB]))
    assert calls.requests == [] and "time budget" in info.value.message
    with pytest.raises(DeadlineReached):  # a destructive call that never left: not OutcomeUnknown
        asyncio.run(client.delete([issue_permit(JOB, "RELEASE_RESOURCE_COMPLETE")]))
    assert calls.requests == []


def test_no_retry_wait_starts_that_would_end_past_the_deadline() -> None:
    clock = FakeClock()
    calls = Calls(clock, error(503, "APIGW.0613"))
    client, _ = make_client(calls, clock, attempts=50)
    client.deadline = 10.0
    with pytest.raises(DeadlineReached) as info:
        asyncio.run(client.status_chunk([JOB]))
    assert clock.monotonic() <= 10.0  # every wait that was started ended inside the budget
    assert len(calls.requests) >= 3 and isinstance(info.value.__cause__, Exception)
    assert "APIGW.0613" in info.value.message  # says what it was waiting out


def test_a_retry_after_longer_than_the_budget_is_not_waited() -> None:
    clock = FakeClock()
    calls = Calls(clock, error(429, "APIGW.0308", **{"Retry-After": "60"}), status_ok())
    client, _ = make_client(calls, clock)
    client.deadline = 30.0
    with pytest.raises(DeadlineReached) as info:
        asyncio.run(client.status_chunk([JOB]))
    assert isinstance(info.value.__cause__, Throttled)
    assert len(calls.requests) == 1 and clock.monotonic() == 0.0
    client.deadline = None  # no budget: the same answer is waited out and read
    calls.answers = [error(429, "APIGW.0308", **{"Retry-After": "60"}), status_ok()]
    assert asyncio.run(client.status_chunk([JOB]))[JOB].ok and clock.monotonic() >= 60


def test_a_retry_inside_the_budget_still_happens() -> None:
    clock = FakeClock()
    calls = Calls(clock, error(503, "APIGW.0613"), status_ok())
    client, _ = make_client(calls, clock)
    client.deadline = 100.0
    assert asyncio.run(client.status_chunk([JOB]))[JOB].ok and len(calls.requests) == 2


def test_an_attempt_gets_at_most_what_is_left_of_the_budget() -> None:
    clock = FakeClock()
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return status_ok()

    client, _ = make_client(Calls(clock, handler), clock)
    client.deadline = 4.0
    asyncio.run(client.status_chunk([JOB]))
    assert seen[0] == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    client.deadline = None
    asyncio.run(client.status_chunk([JOB]))
    assert seen[1]["read"] == 30.0 and seen[1]["connect"] == 10.0


# -- real time, real sockets ---------------------------------------------------------------------------------


@contextmanager
def trickling_server(interval: float = 0.2) -> Iterator[str]:
    """Accepts, reads the request, then sends a valid HTTP head and one body byte every `interval` s, for ever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
                while not stop.wait(interval):
                    conn.sendall(b" ")
            except OSError:
                pass

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_trickling_server_cannot_hold_a_read_past_its_budget() -> None:
    """Each byte comes well inside the read timeout, so only the budget ends the exchange; the read (with all its
    retries) ends at the budget plus a small margin, and says so."""
    with trickling_server() as url:
        async def read() -> tuple[BaseException, float]:
            clock = RealClock()
            async with DrsClient(url, PROJECT, clock=clock, retry=RetryPolicy(attempts=5)) as client:
                client.deadline = clock.monotonic() + 1.5
                started = time.monotonic()
                with pytest.raises(DeadlineReached) as info:
                    await client.status_chunk([JOB])
                return info.value, time.monotonic() - started

        error_, took = asyncio.run(read())
    assert took < 1.5 + 0.75, f"the read took {took:.2f}s against a 1.5 s budget"
    assert f"no answer from {url}/v3/{PROJECT}/jobs/batch-status within" in str(error_)


def test_a_trickled_destructive_call_at_the_budget_is_outcome_unknown() -> None:
    with trickling_server() as url:
        async def stop() -> float:
            clock = RealClock()
            async with DrsClient(url, PROJECT, clock=clock) as client:
                client.deadline = clock.monotonic() + 0.8
                started = time.monotonic()
                with pytest.raises(OutcomeUnknown):
                    await client.stop([StopRequest(JOB)])
                return time.monotonic() - started

        assert asyncio.run(stop()) < 0.8 + 0.6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_names_the_url_and_the_cause() -> None:
    url = f"http://127.0.0.1:{_free_port()}"

    async def read() -> TransportFailure:
        async with DrsClient(url, PROJECT, clock=FakeClock(), retry=RetryPolicy(attempts=2)) as client:
            with pytest.raises(TransportFailure) as info:
                await client.list_jobs("sync")
            return info.value

    failure = asyncio.run(read())
    assert str(failure) == f"list: cannot connect to {url}/v3/{PROJECT}/jobs: connection refused"
    assert failure.url == f"{url}/v3/{PROJECT}/jobs"


def test_a_silent_server_is_named_with_the_time_waited() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"

        async def read() -> TransportFailure:
            async with DrsClient(url, PROJECT, clock=FakeClock(), timeout=httpx.Timeout(0.3),
                                 retry=RetryPolicy(attempts=1)) as client:
                with pytest.raises(TransportFailure) as info:
                    await client.status_chunk([JOB])
                return info.value

        failure = asyncio.run(read())
    assert str(failure) == f"batch-status: no answer from {url}/v3/{PROJECT}/jobs/batch-status within 0.3 s"


@pytest.mark.parametrize("exc", [httpx.ReadTimeout(""), httpx.RemoteProtocolError(""), httpx.ReadError("")])
def test_no_transport_error_has_an_empty_reason(exc: Exception) -> None:
    clock = FakeClock()
    client, _ = make_client(Calls(clock, exc), clock, attempts=1)
    with pytest.raises(TransportFailure) as info:
        asyncio.run(client.status_chunk([JOB]))
    text = str(info.value)
    assert "https://drs.example.test/v3/" in text and not text.rstrip().endswith(":")
    calls = Calls(clock, exc, jobs_ok())
    client, _ = make_client(calls, clock)
    with pytest.raises(OutcomeUnknown) as unknown:
        asyncio.run(client.stop([StopRequest(JOB)]))
    assert "https://drs.example.test/v3/" in str(unknown.value) and len(calls.requests) == 1
