"""A run that ran out of time is resumable (issue 12: "`--timeout` is a hard budget ... resumable; the same holds
for `--stop-timeout` / `--delete-timeout`"): its `timed_out` tasks are re-opened by `resume`, through the audited
`resume_timed_out` transition, back into the state they timed out in, read before anything is sent, and finished
— with no second terminate for a task already releasing, and every rule of the service kept.

Real processes over loopback (the simulator); deadlines on a FakeClock, so fake hours pass in a second.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from orchestrator.clock import FakeClock
from orchestrator.simulator import Simulator
from orchestrator.store.repo import Store
from orchestrator.usecases import RunSummary, pick_run, prepare_resume
from tests.kit import PROJECT, TOKEN, add, cli, settings, simulator, sqlite_url, teardown


def _calls(sim: Simulator) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in sim.destructive_calls:
        out.setdefault(c["job_id"], []).append(c["delete_type"])
    return out


def _resume(url: str, db: str, clock: FakeClock, run_id: str | None = None, **kw: object) -> RunSummary:
    store = Store(db)
    run = pick_run(store, run_id)
    assert run is not None
    resumption = prepare_resume(store, run, settings(url, db, **kw), {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}, {},
                                clock=clock)
    return asyncio.run(resumption.execute())


def test_a_run_that_hit_its_timeout_mid_release_is_resumed_and_finished(tmp_path: Path) -> None:
    _timed_out_mid_release_then_resumed(sqlite_url(tmp_path))


def test_the_same_on_postgresql_a_shared_store(pg_url: str) -> None:
    _timed_out_mid_release_then_resumed(pg_url)


def _timed_out_mid_release_then_resumed(db: str) -> None:
    """Four running tasks; the service stalls their release, so the run's --timeout (600 s, fake) passes with all
    of them stopped and releasing: exit 3, every task timed out. The service then completes the releases (one
    only after a few more reads); `resume` with no id picks the run, re-opens each task into `releasing`, polls,
    and deletes all of them: exactly one terminate and one delete per task, no rule of the service broken, the
    trail verifies, and there is nothing left to resume."""
    clock = FakeClock()
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 4, status="INCRE_TRANSFER_STARTED", never_releases=True)
        td = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=86_400.0, timeout=600.0)
        assert td.outcomes == dict.fromkeys(jobs, "timed_out") and td.summary.exit_code == 3
        assert all(j["remote_status"] == "RELEASE_RESOURCE_STARTED" for j in td.summary.jobs)
        assert td.store.run(td.run_id).status == "finished"  # type: ignore[union-attr]
        assert _calls(sim) == {j: ["terminate"] for j in jobs}

        for j in jobs[:3]:
            sim.drift(j, "deletable")  # the stalled releases complete
        sim.drift(jobs[3], "deletable", after_reads=3)  # ...this one while the resume polls it
        summary = _resume(url, db, clock, poll_interval=5.0, stop_timeout=86_400.0, timeout=600.0)
        assert not any(sim.violations.values()), sim.violation_log
        calls = _calls(sim)
    assert summary.run_id == td.run_id and summary.exit_code == 0, summary.jobs
    assert summary.counts == {"deleted": 4}
    assert calls == {j: ["terminate", "delete"] for j in jobs}  # <= 1 terminate per task: none after the resume
    store = Store(db)
    resumed = [r for r in store.records(td.run_id) if r.trigger == "resume_timed_out"]
    assert sorted(r.job_id for r in resumed) == sorted(jobs)
    assert {(r.from_state, r.to_state) for r in resumed} == {("timed_out", "releasing")}
    assert all((r.detail or "").startswith("resumed: back to releasing with a new budget, read before acting "
                                           "(was: run timeout (600s) passed") for r in resumed)
    triggers = [r.trigger for r in store.records(td.run_id) if r.job_id is None]
    assert triggers.count("run_finished") == 2 and triggers.index("run_resumed") > triggers.index("run_finished")
    run = store.run(td.run_id)
    assert run is not None and run.status == "finished" and run.exit_code == 0
    assert store.verify(td.run_id).ok
    assert pick_run(store, None) is None  # nothing left to resume


def test_a_task_timed_out_by_its_stop_timeout_is_resumed(tmp_path: Path) -> None:
    """--stop-timeout ends one task `timed_out` while the other is deleted (the run finishes, exit 3); resumed, the
    timed-out one is polled and deleted without being stopped again; the deleted one is not touched."""
    clock, db = FakeClock(), sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (stuck,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", never_releases=True)
        (done,) = add(sim, 1, status="RELEASE_RESOURCE_COMPLETE", db_use_type="migration")
        td = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=900.0)
        assert td.outcomes == {stuck: "timed_out", done: "deleted"} and td.summary.exit_code == 3
        sim.drift(stuck, "deletable", after_reads=2)
        summary = _resume(url, db, clock, poll_interval=5.0, stop_timeout=900.0)
        assert not any(sim.violations.values()), sim.violation_log
        calls = _calls(sim)
    assert {j["job_id"]: j["outcome"] for j in summary.jobs} == {stuck: "deleted", done: "deleted"}
    assert summary.exit_code == 0
    assert calls == {stuck: ["terminate", "delete"], done: ["delete"]}
    (resumed,) = [r for r in Store(db).records(td.run_id) if r.trigger == "resume_timed_out"]
    assert resumed.job_id == stuck and "(was: stop-timeout (900s) passed" in (resumed.detail or "")


def test_a_resume_that_times_out_again_stays_resumable_and_never_re_terminates(tmp_path: Path) -> None:
    """Still stalled at the resume, and its first reading there stale: it times out again (exit 3, a new
    stop-timeout, no second terminate), and a later resume still finds it."""
    clock, db = FakeClock(), sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (stuck,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", never_releases=True)
        td = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=900.0)
        # The resume's first reading is stale (the status before the current one: still running): a task resumed
        # into `releasing` is read again before any stop, so no second terminate goes out.
        sim.set_fault("batch-status", "stale", times=1)
        again = _resume(url, db, clock, poll_interval=5.0, stop_timeout=900.0)
        assert sim.faults_served["batch-status:stale"] == 1
        assert again.exit_code == 3 and again.jobs[0]["outcome"] == "timed_out"
        assert again.jobs[0]["reason"].startswith("stop-timeout (900s) passed")
        assert _calls(sim) == {stuck: ["terminate"]}
        sim.drift(stuck, "deletable")
        summary = _resume(url, db, clock, poll_interval=5.0, stop_timeout=900.0)
        assert not any(sim.violations.values())
        assert _calls(sim) == {stuck: ["terminate", "delete"]}
    assert summary.run_id == td.run_id and summary.exit_code == 0


def test_a_timed_out_task_taken_up_by_a_later_run_is_not_picked_and_never_acted_on_blindly(tmp_path: Path) -> None:
    """A new run with the same selection finished the tasks instead: `resume` with no id has nothing to resume;
    resuming the old run by its id re-opens its tasks, reads them gone, and sends nothing."""
    clock, db = FakeClock(), sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 2, status="INCRE_TRANSFER_STARTED", never_releases=True)
        first = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=900.0)
        for j in jobs:
            sim.drift(j, "deletable")
        second = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=900.0)
        assert second.outcomes == dict.fromkeys(jobs, "deleted")
        assert pick_run(Store(db), None) is None
        before = len(sim.destructive_calls)
        old = _resume(url, db, clock, first.run_id, poll_interval=5.0)
        assert len(sim.destructive_calls) == before and not any(sim.violations.values())
    assert {j["outcome"] for j in old.jobs} == {"skipped"}
    assert all(j["reason"] == "gone without a delete from this run" for j in old.jobs)


def test_resume_over_the_cli_finds_a_run_that_hit_its_timeout(tmp_path: Path) -> None:
    """The user's path: `run --timeout` ends exit 3 with the tasks timed out and the run finished; `resume` with no
    id continues it (exit 0, everything deleted), `verify` holds, and a second `resume` has nothing to do."""
    db = sqlite_url(tmp_path)
    env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_DB": db}
    with simulator(profile="fast") as (sim, url):
        env["DRS_TEARDOWN_ENDPOINT"] = url
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED", never_releases=True)
        r = cli(["run", "--all", "--yes", "--timeout", "2", "--poll-interval", "0.05", "--output", "json"], env)
        doc = json.loads(r.stdout)
        assert r.exit_code == doc["exit_code"] == 3, r.output
        assert doc["counts"] == {"timed_out": 3}
        status = json.loads(cli(["status", doc["run_id"], "--output", "json"], env).stdout)
        assert status["status"] == "finished" and status["run_exit_code"] == 3
        assert status["detail"] == f"3 task(s) timed out; resumable: drs-teardown resume {doc['run_id']}"
        for j in jobs:
            sim.drift(j, "deletable")
        again = cli(["resume", "--timeout", "60", "--poll-interval", "0.05", "--output", "json"], env)
        resumed = json.loads(again.stdout)
        assert not any(sim.violations.values())
        assert Counter(c["delete_type"] for c in sim.destructive_calls) == {"terminate": 3, "delete": 3}
    assert again.exit_code == resumed["exit_code"] == 0, again.output
    assert resumed["run_id"] == doc["run_id"] and resumed["counts"] == {"deleted": 3}
    assert "3 timed-out task(s) re-opened" in again.stderr
    assert cli(["verify", doc["run_id"]], env).exit_code == 0
    html = tmp_path / "report.html"
    assert cli(["report", doc["run_id"], "--html", str(html)], env).exit_code == 0
    assert "resume re-opened a timed-out task into the state it timed out in" in html.read_text()
    status = json.loads(cli(["status", doc["run_id"], "--output", "json"], env).stdout)
    assert status["status"] == "finished" and status["run_exit_code"] == 0 and "detail" not in status
    nothing = cli(["resume"], env)
    assert nothing.exit_code == 0 and "nothing to resume" in nothing.output


def test_re_opening_is_refused_while_a_newer_unfinished_run_holds_the_task(tmp_path: Path) -> None:
    """The overlap rail holds for a resume too: a newer run over the same task is unfinished, so the old run's
    timed-out task is not re-opened (exit 2's Refused, naming the run), nothing is sent, and the old run stays as
    it was (finished, timed out)."""
    import pytest

    from orchestrator.errors import Refused
    from orchestrator.selection import Selection
    from orchestrator.usecases import Teardown

    clock, db = FakeClock(), sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (stuck,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", never_releases=True)
        first = teardown(sim, url, db, clock=clock, poll_interval=5.0, stop_timeout=900.0)
        newer = Teardown(settings(url, db), {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}, selection=Selection(all=True),
                         consent="test", store=Store(db), clock=clock)
        asyncio.run(newer.plan())
        newer_id = newer.record()  # recorded, not worked: unfinished, holding the task
        newer.release()
        before = len(sim.destructive_calls)
        store = Store(db)
        run = store.run(first.run_id)
        assert run is not None
        with pytest.raises(Refused, match=f"unfinished run {newer_id}"):
            prepare_resume(store, run, settings(url, db), {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN}, {}, clock=clock)
        assert len(sim.destructive_calls) == before
    after = Store(db)
    assert after.run(first.run_id).status == "finished"  # type: ignore[union-attr]
    assert {t.job_id: t.state.value for t in after.tasks(first.run_id)} == {stuck: "timed_out"}
