"""--record-breakpoint: each task's gtid and incre_start_position are read once it is released and before its
delete, and recorded on the task and on an audit record (issue 14)."""

from __future__ import annotations

from pathlib import Path

from tests.kit import add, simulator, sqlite_url, teardown


def test_breakpoints_are_read_before_the_delete_and_recorded(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 3, status="INCRE_TRANSFER_STARTED", db_use_type="sync", engine_type="mysql")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05, record_breakpoint=True)
        shown = {j: (sim.jobs[j]["gtid"], sim.jobs[j]["incre_start_position"]) for j in jobs}
        breakpoint_flags = [c for c in sim.requests if c.get("route") == "batch-jobs"]
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert all(g and p for g, p in shown.values()), shown
    tasks = {t.job_id: t for t in td.store.tasks(td.run_id)}
    records = td.store.records(td.run_id)
    for job in jobs:
        assert (tasks[job].gtid, tasks[job].incre_start_position) == shown[job]
        (bp,) = [r for r in records if r.job_id == job and r.trigger == "breakpoint"]
        assert bp.detail == f"replication stopped at gtid {shown[job][0]}, position {shown[job][1]}"
        # Read after the release, before the delete intent.
        order = [r.trigger for r in records if r.job_id == job]
        assert order.index("released") < order.index("breakpoint") < order.index("delete")
    assert breakpoint_flags
    # status / the JSON document show each task's breakpoint
    assert {j["job_id"]: (j["breakpoint"]["gtid"], j["breakpoint"]["incre_start_position"])
            for j in td.summary.jobs} == shown
    assert td.store.verify(td.run_id).ok


def test_without_the_flag_nothing_extra_is_read(tmp_path: Path) -> None:
    with simulator(profile="fast") as (sim, url):
        jobs = add(sim, 2, status="INCRE_TRANSFER_STARTED", db_use_type="sync", engine_type="mysql")
        td = teardown(sim, url, sqlite_url(tmp_path), poll_interval=0.05)
    assert td.outcomes == dict.fromkeys(jobs, "deleted")
    assert not [r for r in td.store.records(td.run_id) if r.trigger == "breakpoint"]


def test_breakpoints_in_status_audit_exports_and_report(tmp_path: Path) -> None:
    import csv
    import io
    import json

    from orchestrator.store import audit
    from tests.kit import cli

    db = sqlite_url(tmp_path)
    with simulator(profile="fast") as (sim, url):
        (job,) = add(sim, 1, status="INCRE_TRANSFER_STARTED", db_use_type="sync", engine_type="mysql")
        td = teardown(sim, url, db, poll_interval=0.05, record_breakpoint=True)
        gtid, position = sim.jobs[job]["gtid"], sim.jobs[job]["incre_start_position"]
    env = {"DRS_TEARDOWN_DB": db, "COLUMNS": "400"}
    shown = f"replication stopped at gtid {gtid}, position {position}"
    status = cli(["status", td.run_id], env)
    assert status.exit_code == 0, status.stdout
    assert all(part in status.stdout for part in ("replication stopped at gtid", gtid, position)), status.stdout
    # audit JSON: the breakpoint record carries its values, and the export still verifies on its own
    records = json.loads(cli(["audit", td.run_id, "--format", "json"], env).stdout)
    (bp,) = [r for r in records if r["trigger"] == "breakpoint"]
    assert bp["values"] == {"gtid": gtid, "incre_start_position": position} and bp["detail"] == shown
    as_hashed = [{**r, "actor": json.dumps(r["actor"], sort_keys=True, separators=(",", ":")),
                  **({"values": json.dumps(r["values"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)}
                     if "values" in r else {})} for r in records]
    run = td.store.run(td.run_id)
    assert run is not None
    v = audit.verify_chain(td.run_id, as_hashed, run.head_seq, run.head_hash)
    assert v.ok, v.problem
    # audit CSV: a values column
    text = cli(["audit", td.run_id, "--format", "csv"], env).stdout
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    (row,) = [r for r in rows if r["trigger"] == "breakpoint"]
    assert json.loads(row["values"]) == {"gtid": gtid, "incre_start_position": position} and row["detail"] == shown
    # the HTML report
    html = tmp_path / "r.html"
    assert cli(["report", td.run_id, "--html", str(html)], env).exit_code == 0
    assert shown in html.read_text(encoding="utf-8")
