"""Reads are idempotent: malformed, partial and unreadable answers are retried, ids left out are asked again in
a call of their own, a whole-call 400 about one id is narrowed to that id, and what comes back is per id.
MockTransport and a fake clock: no sleeping."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import AuthFailure, MalformedResponse, RequestRejected, TransportFailure
from orchestrator.wire import StopRequest
from tests.drs.mock import JOB, Calls, Handler, echo_status, error, job, jobs_ok, make_client, status_ok

MALFORMED = [
    b'{"count": 1, "results": [{"id": "' + JOB.encode() + b'", "stat',  # truncated (framing intact)
    b"<html><body>502 Bad Gateway</body></html>",  # not JSON
    b"",  # empty
    b'{"count": 1}',  # no results
    b'{"count": 1, "results": null}',  # results null
    b'[{"id": "' + JOB.encode() + b'", "status": "INCRE_TRANSFER_STARTED"}]',  # an array, not an object
    b'{"count": 1, "results": [{"status": "INCRE_TRANSFER_STARTED"}]}',  # an item without its id
    b'{"count": 1, "results": [{"id": "' + JOB.encode() + b'", "status": 7}]}',  # a status of the wrong type
    b'{"count": 1, "results": [{"id": "9' + JOB[1:].encode() + b'", "status": "DELETED"}]}',  # not asked for
    b'{"count": 0, "results": []}',  # answers none of the ids asked
    b'\xff\xfe not utf-8',
]


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_read_answer_is_retried_and_then_read(body: bytes) -> None:
    """Adapted from test_resilience's "raise without retrying": one bad answer never ends a read."""
    clock = FakeClock()
    calls = Calls(clock, httpx.Response(200, content=body), status_ok())
    client, recorded = make_client(calls, clock)
    answers = asyncio.run(client.status_chunk([JOB]))
    assert answers[JOB].ok and answers[JOB].item.status == "INCRE_TRANSFER_STARTED"
    assert len(calls.requests) == 2 and client.stats["malformed"] == 1
    assert client.stats["retries"] == 1 and calls.at[1] > calls.at[0] - 1e-9  # after a (jittered) pause
    assert [e.attempt for e in recorded] == [1, 2]


@pytest.mark.parametrize("body", MALFORMED[:3])
def test_a_read_that_stays_malformed_raises_after_its_attempts(body: bytes) -> None:
    clock = FakeClock()
    calls = Calls(clock, httpx.Response(200, content=body))
    client, _ = make_client(calls, clock, attempts=4)
    with pytest.raises(MalformedResponse):
        asyncio.run(client.status_chunk([JOB]))
    assert len(calls.requests) == 4 and client.stats["gave_up:HTTP200"] == 1


def test_detail_and_list_answers_are_retried_too() -> None:
    clock = FakeClock()
    detail = httpx.Response(200, json={"count": 1, "results": [{"id": JOB, "status": "CONFIGURATION"}]})
    calls = Calls(clock, httpx.Response(200, content=b"{"), detail)
    client, _ = make_client(calls, clock)
    assert asyncio.run(client.batch_detail([JOB]))[JOB].item.status == "CONFIGURATION"
    listed = httpx.Response(200, json={"total_record": 1, "jobs": [{"id": JOB, "status": "CONFIGURATION"}]})
    calls = Calls(clock, httpx.Response(200, json={"total_record": 1, "jobs": None}), listed)
    client, _ = make_client(calls, clock)
    assert [j.id for j in asyncio.run(client.list_jobs("sync"))] == [JOB] and len(calls.requests) == 2


def _list_handler(rows: list[str], *, drop: dict[int, int]) -> Handler:
    """A list API over `rows` (100 a page); `drop` = page -> how many of its answers leave one row out."""
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        page, per = body["cur_page"], body["per_page"]
        if (page - 1) * per >= max(1, len(rows)):
            return error(400, "DRS.M00211", "The value of Page exceeds the upper limit.")
        shown = rows[(page - 1) * per: page * per]
        if drop.get(page, 0) > 0:
            drop[page] -= 1
            shown = shown[1:]
        return httpx.Response(200, json={"total_record": len(rows),
                                         "jobs": [{"id": i, "status": "CONFIGURATION"} for i in shown]})
    return handler


@pytest.mark.parametrize("page", [1, 2])
def test_a_list_page_that_leaves_a_row_out_is_read_again(page: int) -> None:
    """150 tasks, and one list answer leaves a row out (issue 12: a partial list answer): the page is read again,
    every task is listed, and no page past the last is asked for (that was 400 DRS.M00211, exit 1)."""
    clock = FakeClock()
    rows = [job(i) for i in range(150)]
    calls = Calls(clock, _list_handler(rows, drop={page: 1}))
    client, _ = make_client(calls, clock)
    listed = [j.id for j in asyncio.run(client.list_jobs("migration"))]
    assert listed == rows
    assert [json.loads(r.content)["cur_page"] for r in calls.requests] == sorted([1, 2, page])
    assert client.stats["malformed"] == 1


def test_a_list_page_that_stays_short_is_taken_as_the_service_gives_it() -> None:
    """Whether total_record counts rows the list never shows is unknown (reference §14.7): a page that stays
    short is read again twice, then taken, and the listing ends at the last page."""
    clock = FakeClock()
    rows = [job(i) for i in range(150)]
    calls = Calls(clock, _list_handler(rows, drop={2: 10}))
    client, _ = make_client(calls, clock)
    listed = [j.id for j in asyncio.run(client.list_jobs("migration"))]
    assert listed == rows[:100] + rows[101:]
    assert [json.loads(r.content)["cur_page"] for r in calls.requests] == [1, 2, 2, 2]


def test_an_unknown_status_is_passed_through_as_it_came() -> None:
    clock = FakeClock()
    client, _ = make_client(Calls(clock, status_ok(status="QUANTUM_FLUX")), clock)
    assert asyncio.run(client.status_chunk([JOB]))[JOB].item.status == "QUANTUM_FLUX"


def test_ids_a_200_leaves_out_are_asked_again_in_a_call_of_their_own() -> None:
    clock = FakeClock()
    ids = [job(i) for i in range(10)]
    left_out = frozenset(ids[3:5])
    calls = Calls(clock, echo_status(skip=left_out), echo_status())
    client, _ = make_client(calls, clock)
    answers = asyncio.run(client.status_chunk(ids))
    assert set(answers) == set(ids) and all(a.ok for a in answers.values())
    assert calls.asked() == [ids, sorted(left_out)]
    assert client.stats["reasked:batch-status"] == 2


@pytest.mark.parametrize("others_listed", [False, True])
def test_a_400_listing_only_the_failing_id_answers_the_rest_separately(others_listed: bool) -> None:
    """Real batch-detail answers a missing id with a 400 that still has results (reference §10.4); whether the
    other ids are listed too is unknown (§14): both shapes end with every id answered."""
    clock = FakeClock()
    ids = [job(i) for i in range(4)]
    gone = ids[2]

    def first(request: httpx.Request) -> httpx.Response:
        results = [{"id": gone, "error_code": "DRS.M00289", "error_message": "job does not exist"}]
        if others_listed:
            results += [{"id": i, "status": "RELEASE_RESOURCE_COMPLETE"} for i in ids if i != gone]
        return httpx.Response(400, json={"count": len(results), "results": results})

    calls = Calls(clock, first, echo_status("RELEASE_RESOURCE_COMPLETE"))
    client, _ = make_client(calls, clock)
    answers = asyncio.run(client.status_chunk(ids))
    assert answers[gone].item.error_code == "DRS.M00289" and answers[gone].ok
    assert all(answers[i].item.status == "RELEASE_RESOURCE_COMPLETE" for i in ids if i != gone)
    assert len(calls.requests) == (1 if others_listed else 2)
    if not others_listed:
        assert calls.asked()[1] == [i for i in ids if i != gone]


@pytest.mark.parametrize("api", ["status", "detail"])
def test_a_whole_call_m00202_is_narrowed_to_the_id_that_caused_it(api: str) -> None:
    clock = FakeClock()
    ids = [job(i) for i in range(8)]
    bad = ids[5]

    def service(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content)["jobs"]
        if bad in asked:
            return error(400, "DRS.M00202", "The value of parameter jobs is invalid.")
        results = [{"id": i, "status": "INCRE_TRANSFER_STARTED"} for i in asked]
        return httpx.Response(200, json={"count": len(results), "results": results})

    calls = Calls(clock, service)
    client, _ = make_client(calls, clock)
    answers = asyncio.run(client.status_chunk(ids) if api == "status" else client.batch_detail(ids))
    assert set(answers) == set(ids)
    assert answers[bad].item.error_code == "DRS.M00202"
    assert answers[bad].item.error_message == "The value of parameter jobs is invalid."
    assert all(answers[i].item.status == "INCRE_TRANSFER_STARTED" for i in ids if i != bad)
    assert len(calls.requests) <= 2 * 3 + 1  # a bisection: about 2·log2(8) calls, not one per id
    assert client.stats["split:DRS.M00202"] >= 1


def test_other_whole_call_rejections_still_raise() -> None:
    clock = FakeClock()
    client, _ = make_client(Calls(clock, error(400, "DRS.M00211")), clock)
    with pytest.raises(RequestRejected):
        asyncio.run(client.status_chunk([job(1), job(2)]))
    client, _ = make_client(Calls(clock, error(403, "DRS.M00261")), clock)
    with pytest.raises(AuthFailure):
        asyncio.run(client.status_chunk([job(1), job(2)]))


def test_a_follow_up_that_fails_fails_for_its_ids_alone() -> None:
    clock = FakeClock()
    ids = [job(i) for i in range(3)]
    calls = Calls(clock, echo_status(skip=frozenset({ids[1]})), httpx.ConnectError("refused"))
    client, _ = make_client(calls, clock, attempts=2)
    answers = asyncio.run(client.status_chunk(ids))
    assert answers[ids[0]].ok and answers[ids[2]].ok
    failed = answers[ids[1]]
    assert not failed.ok and isinstance(failed.failure, TransportFailure)
    assert failed.item.id == ids[1] and failed.item.status is None and failed.item.error_code is None


def test_a_whole_chunk_failure_raises() -> None:
    clock = FakeClock()
    client, _ = make_client(Calls(clock, httpx.ConnectError("refused")), clock, attempts=2)
    with pytest.raises(TransportFailure):
        asyncio.run(client.status_chunk([job(1), job(2)]))


def test_batch_status_chunks_by_100_with_per_page_set() -> None:
    clock = FakeClock()
    calls = Calls(clock, echo_status())
    client, _ = make_client(calls, clock)
    ids = [job(i) for i in range(250)]
    assert set(asyncio.run(client.batch_status(ids))) == set(ids)
    bodies = [json.loads(r.content) for r in calls.requests]
    assert sorted(len(b["jobs"]) for b in bodies) == [50, 100, 100]
    assert all(b["page_req"] == {"cur_page": 1, "per_page": len(b["jobs"])} for b in bodies)


def test_batch_jobs_reports_ids_its_answer_left_out_and_is_never_retried_when_malformed() -> None:
    clock = FakeClock()
    client, _ = make_client(Calls(clock, jobs_ok(job(1))), clock)
    result = asyncio.run(client.stop([StopRequest(job(1)), StopRequest(job(2))]))
    assert set(result.items) == {job(1)} and result.missing == (job(2),)
    calls = Calls(clock, httpx.Response(202, content=b"{"), jobs_ok())
    client, _ = make_client(calls, clock)
    with pytest.raises(MalformedResponse):
        asyncio.run(client.stop([StopRequest(JOB)]))
    assert len(calls.requests) == 1
