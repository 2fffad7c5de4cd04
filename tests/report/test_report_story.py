"""The HTML report tells the whole story (issue 17): escalations, recovered errors, per-item codes, chain events
and gaps, every task problems first, a histogram at 10,000 tasks, targets and breakpoints when recorded."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from reportkit import T0, make_run, rough_fast, synthetic_run

from orchestrator.lifecycle import OUTCOME_ORDER
from orchestrator.report import OUTCOME_COLORS, STATE_COLORS, render_html, tell
from orchestrator.report.story import Gap, attempts_of, breakpoint_of, codes_of, cut, gaps_of, target_of
from orchestrator.report.tables import targets_table, tasks_table
from orchestrator.report.timeline import HISTOGRAM_BINS, state_counts
from orchestrator.store.repo import Store
from report.trails import ALICE, BOB, RunEvent, Step, escalated_run, interrupted_run, scripted_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('story') / 'story.db'}")
    yield s
    s.close()


@pytest.fixture(scope="module")
def escalated(store: Store) -> str:
    return render_html(store, escalated_run(store)).html


def _rows(page: str) -> list[tuple[str, str]]:
    """(outcome, row html) of each task row, in document order."""
    body = page[page.index('<table class="tasks'):]
    body = body[:body.index("</table>")]
    return re.findall(r'<tr class="o-(\w+)" style="--p:\d+">(.*?)</tr>', body, re.S)


def _row(page: str, name: str) -> str:
    return next(row for _, row in _rows(page) if f"{name}<div" in row)


def _svg(page: str) -> ET.Element:
    match = re.search(r"<svg .*?</svg>", page, re.S)
    assert match, "no inline SVG"
    return ET.fromstring(match.group(0))


# -- escalations, retries, recovered errors -------------------------------------------------------------------


def test_every_stop_attempt_and_the_escalation_with_its_reason(escalated: str) -> None:
    row = _row(escalated, "escalated-mysql")
    assert "3 stops; escalated to force_terminate" in row
    assert "stop 1: terminate" in row and "stop 2: terminate" in row and "stop 3: force_terminate" in row
    assert "RELEASE_RESOURCE_FAILED after 1 terminate(s): terminate again (attempt 2)" in row
    assert "RELEASE_RESOURCE_FAILED after 2 terminate(s): escalating to force_terminate (attempt 3)" in row
    assert row.count('<b class="flag">escalated</b>') == 1  # the escalation itself, not every later stop
    assert re.search(r'<li class="esc">.*?stop 3: force_terminate', row)
    # --no-force: two terminates, no escalation, failed with the reason.
    refused = _row(escalated, "no-force-allowed")
    assert "2 stops" in refused and "escalated" not in refused
    assert "--no-force forbids force_terminate" in refused


def test_transient_codes_of_deleted_tasks_are_marked_recovered_and_explained(escalated: str) -> None:
    for name, code in (("dropped-connection", "RemoteProtocolError"), ("server-error", "DRS.M00004"),
                       ("busy-then-fine", "DRS.M01504")):
        row = _row(escalated, name)
        assert f"<code>{code}</code>" in row, name
        assert '<span class="rec-tag">recovered</span>' in row, name
        assert re.search(r'<div class="code rec" title="[^"]*the task got past it', row), name
    dropped = _row(escalated, "dropped-connection")
    assert "outcome_unknown</b> — stop outcome unknown" in dropped  # the lost answer, in the task's story
    assert "the connection dropped mid-answer" in dropped  # and what the code means
    assert "requeue</b> — stop refused: DRS.M01504" in _row(escalated, "busy-then-fine")


def test_per_item_codes_are_in_the_error_chart(escalated: str) -> None:
    chart = escalated[escalated.index("<h3>Error codes</h3>"):]
    chart = chart[:chart.index("</div>\n</div>")]
    # exchanges · task records: DRS.M01504 came inside a 202, so only the task records carry it.
    assert re.search(r"<code>DRS\.M01504</code>.*?<b>0 · 1</b>", chart, re.S)
    assert re.search(r"<code>RemoteProtocolError</code>.*?<b>1 · 1</b>", chart, re.S)
    assert re.search(r"<code>APIGW\.0308</code>.*?<b>1 · 0</b>", chart, re.S)
    assert "<code>none</code>" in chart and "per-item answers inside a 2xx" in chart


def test_every_task_in_the_table_problems_first_and_sortable(escalated: str) -> None:
    rows = _rows(escalated)
    outcomes = [o for o, _ in rows]
    assert sorted(outcomes, key=OUTCOME_ORDER.index) == outcomes
    assert outcomes[:2] == ["failed", "blocked"] and set(outcomes[2:]) == {"deleted"}
    assert len(rows) == 6
    # CSS-only controls: the plan order is carried on each row, one filter per outcome present.
    assert 'id="sort-outcome" checked' in escalated and 'id="sort-plan"' in escalated
    assert sorted(int(p) for p in re.findall(r'style="--p:(\d+)"', escalated)) == list(range(6))
    for outcome in ("failed", "blocked", "deleted"):
        assert f'id="show-{outcome}"' in escalated
    assert 'id="show-timed_out"' not in escalated
    assert "<script" not in escalated


def test_trigger_counts_have_a_legend(escalated: str) -> None:
    assert "What the trigger counts mean" in escalated
    assert 'Here "delete 4, deleted 4": 4 deletes sent, 4 confirmed.' in escalated.replace("&quot;", '"')
    assert "intent: a delete is about to be sent; one record per attempt" in escalated
    assert "<td>stop</td><td class=\"num\">10</td>" in escalated


def test_attempts_mark_only_a_real_escalation() -> None:
    def rec(trigger: str, detail: str) -> Any:
        return SimpleNamespace(trigger=trigger, detail=detail, at=T0)

    forced = attempts_of([rec("stop", "force_terminate: PAUSING must be stopped first")])
    assert [(a.action, a.escalation) for a in forced] == [("force_terminate", False)]  # --force: from the start
    escalated = attempts_of([rec("stop", "terminate: PAUSING must be stopped first"),
                             rec("stop", "RELEASE_RESOURCE_FAILED after 2 terminate(s): escalating to force_"
                                         "terminate (attempt 3)"),
                             rec("stop", "RELEASE_RESOURCE_FAILED after 3 terminate(s): force_terminate again "
                                         "(attempt 4)"),
                             rec("resend", "reconcile: outcome unknown, force_terminate sent once more"),
                             rec("delete", "delete: RELEASE_RESOURCE_COMPLETE is deletable")])
    assert [(a.action, a.escalation) for a in escalated] == [
        ("terminate", False), ("force_terminate", True), ("force_terminate", False), ("force_terminate", False),
        ("delete", False)]
    no_force = attempts_of([rec("stop", "RELEASE_RESOURCE_FAILED after 2 terminate(s); --no-force forbids "
                                        "force_terminate")])
    assert no_force[0].action == "terminate"


def test_codes_are_recovered_only_when_the_task_got_past_them() -> None:
    def rec(code: str | None) -> Any:
        return SimpleNamespace(error_code=code)

    task = SimpleNamespace(error_code="RemoteProtocolError")
    deleted = codes_of([rec("DRS.M01504"), rec(None), rec("RemoteProtocolError")], task, "deleted")
    assert [(c.code, c.recovered) for c in deleted] == [("DRS.M01504", True), ("RemoteProtocolError", True)]
    failed = codes_of([rec("DRS.M01504"), rec("DRS.M00304")], SimpleNamespace(error_code="DRS.M00304"), "failed")
    assert [(c.code, c.recovered) for c in failed] == [("DRS.M00304", False), ("DRS.M01504", True)]
    # No error code on the row: the last one on the records is what ended it.
    timed_out = codes_of([rec("DRS.M01504"), rec("DRS.M01504")], SimpleNamespace(error_code=None), "timed_out")
    assert [(c.code, c.count, c.recovered) for c in timed_out] == [("DRS.M01504", 2, False)]


# -- interruptions and resumes --------------------------------------------------------------------------------


@pytest.mark.parametrize("resumed_record", [True, False], ids=["run_resumed", "no-resume-record"])
def test_interruption_and_resume_are_chain_events_and_a_gap(store: Store, resumed_record: bool) -> None:
    page = render_html(store, interrupted_run(store, resumed_record=resumed_record)).html
    events = page[page.index("<h3>Run events</h3>"):]
    assert "<b>interrupted</b>" in events and "4 task(s) pending; resumable" in events
    assert "alice @ ops-bastion-1" in events
    if resumed_record:
        assert '<tr class="ev-run_resumed">' in events and "<b>resumed</b>" in events
        assert "bob @ ops-bastion-2" in events and "2026-03-01 09:40:20 UTC" in events
        assert "resumed by bob @ ops-bastion-2" in events
    else:
        assert "<b>resumed</b>" not in events
        assert "no resume record" in events
    # Without a resume record the gap closes at the next record (the first read after the restart, t=627).
    idle = "10 min 00 s" if resumed_record else "10 min 07 s"
    assert f"interrupted for <b>{idle}</b>" in events
    assert f"{idle} of it interrupted" in page
    svg = _svg(page)
    gaps = [el for el in svg.iter("rect") if el.get("class") == "gap"]
    assert len(gaps) == 1
    g0, g1 = float(gaps[0].get("x", 0)), float(gaps[0].get("x", 0)) + float(gaps[0].get("width", 0))
    bars = [el for el in svg.iter("rect") if el.get("fill") in STATE_COLORS.values()]
    assert bars
    for bar in bars:  # no bar across the gap
        x0, x1 = float(bar.get("x", 0)), float(bar.get("x", 0)) + float(bar.get("width", 0))
        assert x1 <= g0 + 0.2 or x0 >= g1 - 0.2, (x0, x1, g0, g1)
    # The gap is drawn narrow (a broken axis), so the 40 s of work are not squeezed into a sliver.
    assert g1 - g0 < 100
    assert f"interrupted {idle}" in page


def test_an_instant_just_before_an_interruption_is_drawn_but_not_into_the_gap(store: Store) -> None:
    """A step a millisecond before the run was interrupted is drawn 2 px wide (an instant still shows), ending at
    the gap, never inside it (it used to cross the gap's edge whenever the run's first part was short)."""
    from orchestrator.lifecycle import TaskState

    steps = [Step(0.009, "stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", "terminate"),
             Step(0.014, "stop_accepted", TaskState.RELEASING, "RELEASE_RESOURCE_STARTED", "stop accepted"),
             Step(0.62, "released", TaskState.DELETABLE, "RELEASE_RESOURCE_COMPLETE", "observed"),
             Step(0.621, "delete", TaskState.DELETING, "RELEASE_RESOURCE_COMPLETE", "delete"),
             Step(0.623, "deleted", TaskState.DELETED, "RELEASE_RESOURCE_COMPLETE", "delete accepted")]
    run_id = scripted_run(store, {"instant": ("stop_then_delete", "INCRE_TRANSFER_STARTED", steps)},
                          events=[RunEvent(0.015, "run_interrupted", ALICE, "1 task(s) pending"),
                                  RunEvent(0.56, "run_resumed", BOB, "resumed")],
                          finished_at=0.63, run_id="instant" + "0" * 25)
    svg = _svg(render_html(store, run_id).html)
    (gap,) = [el for el in svg.iter("rect") if el.get("class") == "gap"]
    g0 = float(gap.get("x", 0))
    bars = [(float(b.get("x", 0)), float(b.get("x", 0)) + float(b.get("width", 0)))
            for b in svg.iter("rect") if b.get("fill") in STATE_COLORS.values()]
    before = [b for b in bars if b[0] < g0]
    assert before and all(x1 <= g0 + 0.05 for _, x1 in before), (before, g0)
    assert all(x1 - x0 >= 1.95 for x0, x1 in bars)  # every piece still shows


def test_a_real_interrupted_and_resumed_run_shows_both_events_and_the_gap(tmp_path: Path) -> None:
    """The CLI, for real: a run killed by SIGTERM right after its stop intents (exit 130), a pause, then `resume`;
    its report has the run_interrupted and run_resumed chain events with who and when, and a gap in the timeline
    that no bar crosses."""
    import json
    import os
    import subprocess
    import sys
    import time

    from tests.kit import PROJECT, TOKEN, add, cli, simulator, sqlite_url

    db = sqlite_url(tmp_path, "resumed.db")
    with simulator(profile="fast") as (sim, url):
        add(sim, 4, status="INCRE_TRANSFER_STARTED")
        env = {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_PROJECT_ID": PROJECT, "DRS_TEARDOWN_ENDPOINT": url}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_SDK_"))}
        first = subprocess.run(
            [sys.executable, "-m", "orchestrator", "--db", db, "run", "--all", "--yes", "--output", "json",
             "--poll-interval", "0.05"], env={**base, **env, "DRS_TEARDOWN_CRASH_AT": "after_intent:stop:1:TERM"},
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert first.returncode == 130, first.stderr
        time.sleep(0.5)  # the gap: nobody works on the run
        second = cli(["--db", db, "resume", "--output", "json"], env)
        assert second.exit_code == 0, second.output
    run_id = json.loads(first.stdout)["run_id"]
    store = Store(db)
    try:
        page = render_html(store, run_id).html
    finally:
        store.close()
    events = page[page.index("<h3>Run events</h3>"):]
    assert '<tr class="ev-run_interrupted">' in events and '<tr class="ev-run_resumed">' in events
    assert "1 interrupted, 1 resumed" in page and "of it interrupted" in page
    svg = _svg(page)
    (gap,) = [el for el in svg.iter("rect") if el.get("class") == "gap"]
    g0 = float(gap.get("x", 0))
    g1 = g0 + float(gap.get("width", 0))
    bars = [el for el in svg.iter("rect") if el.get("fill") in STATE_COLORS.values()]
    assert bars
    for bar in bars:
        x0 = float(bar.get("x", 0))
        x1 = x0 + float(bar.get("width", 0))
        assert x1 <= g0 + 0.2 or x0 >= g1 - 0.2, (x0, x1, g0, g1)
    assert any(float(bar.get("x", 0)) >= g1 - 0.2 for bar in bars)  # work after the resume is drawn too


def test_gaps_from_records() -> None:
    def rec(at: float, trigger: str, job: str | None = None) -> Any:
        return SimpleNamespace(at=T0 + timedelta(seconds=at), trigger=trigger, job_id=job,
                               actor='{"os_user": "bob", "host": "h2"}')

    assert gaps_of([rec(0, "run_started"), rec(5, "stop", "a"), rec(9, "run_finished")]) == []
    # A kill leaves no run_interrupted: the gap opens at the last record before the resume.
    killed = gaps_of([rec(0, "run_started"), rec(5, "stop", "a"), rec(300, "run_resumed"), rec(301, "stop", "a")])
    assert killed == [Gap(T0 + timedelta(seconds=5), T0 + timedelta(seconds=300), "bob @ h2")]
    # Interrupted and never resumed: no gap (nothing after it).
    assert gaps_of([rec(0, "run_started"), rec(5, "run_interrupted")]) == []
    a, b = T0, T0 + timedelta(seconds=100)
    gap = Gap(T0 + timedelta(seconds=20), T0 + timedelta(seconds=80), None)
    assert cut(a, b, [gap]) == [(a, gap.start), (gap.end, b)]
    assert cut(a, gap.start, [gap]) == [(a, gap.start)]


# -- 10,000 tasks ---------------------------------------------------------------------------------------------


def test_ten_thousand_tasks_a_histogram_and_every_task_in_the_table(tmp_path: Path) -> None:
    big = Store(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        run_id = synthetic_run(big, 10_000)
        report = render_html(big, run_id)
        story = tell(big.run(run_id), big.tasks(run_id), big.records(run_id))  # type: ignore[arg-type]
    finally:
        big.close()
    page = report.html
    assert page.count('<td class="idx">') == 10_000
    assert "not drawn" not in page and "all 10,000 tasks by state over time" in page
    assert len(page) < 12_000_000
    svg = _svg(page)
    assert len([el for el in svg.iter("rect")]) < 3_000  # columns, not 10,000 lanes
    assert OUTCOME_COLORS["deleted"] in {el.get("fill") for el in svg.iter("rect")}
    # Every column counts every task exactly once.
    samples = [story.start + (story.end - story.start) * (i + 0.5) / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS)]
    counts = state_counts(story, samples)
    assert {sum(c[i] for c in counts.values()) for i in range(HISTOGRAM_BINS)} == {10_000}
    # Problems first in the table; deleted tasks last.
    outcomes = [o for o, _ in _rows(page)]
    assert outcomes[0] == "failed" and outcomes[-1] == "deleted"
    assert sorted(outcomes, key=OUTCOME_ORDER.index) == outcomes


# -- targets and breakpoints (issues 15 and 14), when recorded ------------------------------------------------


def test_targets_and_breakpoints_when_the_tasks_carry_them(store: Store) -> None:
    run_id = escalated_run(store) if store.run("escalated" + "0" * 23) is None else "escalated" + "0" * 23
    run, tasks, records = store.run(run_id), store.tasks(run_id), store.records(run_id)
    assert run is not None
    assert not targets_table(tell(run, tasks, records))  # absent: no card at all
    for i, t in enumerate(tasks):
        t.target = "bj4-legacy" if i % 2 else {"label": "sg-decommission", "endpoint": "https://x"}  # type: ignore[attr-defined]
        t.gtid = f"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-{i + 5}"  # type: ignore[attr-defined]
        t.incre_start_position = f"mysql-bin.000003:{1000 + i}"  # type: ignore[attr-defined]
    story = tell(run, tasks, records)
    table = targets_table(story)
    assert "<td>bj4-legacy</td>" in table and "<td>sg-decommission</td>" in table
    assert "<th>total</th>" in table
    html = tasks_table(story)
    assert "target bj4-legacy" in html and "target sg-decommission" in html
    assert "replication stopped at gtid 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5, position mysql-bin.000003:1000" \
        in html


def test_breakpoint_and_target_are_read_liberally() -> None:
    assert breakpoint_of(SimpleNamespace(), []) is None
    record = SimpleNamespace(gtid=None, incre_start_position="mysql-bin.000009:77")
    assert breakpoint_of(SimpleNamespace(gtid=None), [record]) == "replication stopped at position mysql-bin.000009:77"
    record = SimpleNamespace(breakpoint={"gtid": "uuid:1-9", "position": "bin.2:4"})
    assert breakpoint_of(SimpleNamespace(), [record]) == "replication stopped at gtid uuid:1-9, position bin.2:4"
    assert target_of(SimpleNamespace()) is None and target_of(SimpleNamespace(target="")) is None
    assert target_of(SimpleNamespace(target={"project_id": "p1"})) == "p1"


# -- a real rough run over loopback ---------------------------------------------------------------------------


def test_a_real_rough_run_tells_every_retry_and_recovery(tmp_path: Path) -> None:
    real = make_run(tmp_path / "rough.db", jobs=60, seed=5, profile=rough_fast())
    store = Store(real.url)
    try:
        page = render_html(store, real.run_id).html
        records, tasks = store.records(real.run_id), store.tasks(real.run_id)
    finally:
        store.close()
    rows = dict((name, row) for _, row in _rows(page) for name in re.findall(r"^<td class=\"idx\">\d+</td><td>"
                                                                           r"([^<]+)<div", row))
    assert len(rows) == len(tasks)
    stops = Counter(r.job_id for r in records if r.trigger in ("stop", "resend"))
    assert any(n > 1 for n in stops.values()), "the rough profile retried no stop: the test proves nothing"
    for t in tasks:
        row = rows[t.name]
        if stops[t.job_id] > 1:
            assert f"{stops[t.job_id]} stops" in row, t.name
        if t.error_code and t.state.value == "deleted":
            assert '<span class="rec-tag">recovered</span>' in row and f"<code>{t.error_code}</code>" in row
    # Every escalation is visible: a force_terminate sent after plain terminates, with its reason, on that task only.
    stops_said: dict[str, list[str]] = {}
    for r in records:
        if r.job_id and r.trigger in ("stop", "resend"):
            stops_said.setdefault(r.job_id, []).append(r.detail or "")
    escalated = {j for j, said in stops_said.items()
                 if any("escalating to force_terminate" in d or (d.startswith("force_terminate")
                                                                 and any(e.startswith("terminate") for e in said[:i]))
                        for i, d in enumerate(said))}
    for t in tasks:
        said = stops_said.get(t.job_id)
        assert ("escalated to force_terminate" in rows[t.name]) == (t.job_id in escalated), (t.name, said)
        if t.job_id in escalated:
            assert '<b class="flag">escalated</b>' in rows[t.name] and "force_terminate" in rows[t.name]
    per_item = Counter(r.error_code for r in records if r.job_id and r.error_code)
    chart = page[page.index("<h3>Error codes</h3>"):]
    for code in per_item:
        assert f"<code>{code}</code>" in chart, code


def test_a_real_run_over_loopback_shows_each_escalation_with_its_reason(tmp_path: Path) -> None:
    """Tasks whose plain terminates end RELEASE_RESOURCE_FAILED are escalated to force_terminate by the engine;
    the report marks exactly those, with the reason the trail gives, and the trigger legend counts the stops."""
    from tests.kit import add, simulator, sqlite_url, teardown

    db = sqlite_url(tmp_path, "escalate.db")
    with simulator() as (sim, url):
        stuck = add(sim, 2, status="INCRE_TRANSFER_STARTED", release_fails=True)
        plain = add(sim, 1, status="INCRE_TRANSFER_STARTED")
        td = teardown(sim, url, db)
    assert {j: td.outcomes[j] for j in stuck + plain} == dict.fromkeys(stuck + plain, "deleted")
    store = Store(db)
    try:
        page = render_html(store, td.run_id).html
        names = {t.job_id: t.name for t in store.tasks(td.run_id)}
    finally:
        store.close()
    for job in stuck:
        row = _row(page, names[job])
        assert "escalated to force_terminate" in row and '<b class="flag">escalated</b>' in row
        assert "escalating to force_terminate" in row and "RELEASE_RESOURCE_FAILED after 2 terminate(s)" in row
    assert "escalated" not in _row(page, names[plain[0]])


def test_a_run_recorded_before_planning_still_renders(store: Store) -> None:
    report = render_html(store, scripted_run(store, {}, run_id="empty" + "0" * 27))
    assert report.ok and "no tasks" in report.html and "Outcome <small>0 tasks</small>" in report.html
