"""Audit exports (table, JSON, CSV), the verification summary, and the HTML report rendered in Chromium."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reportkit import CHROMIUM, Attacker, RealRun, copy_run, make_run, near, read_png, rgb, screenshot, synthetic_run

from orchestrator.errors import StoreError
from orchestrator.report import (
    CSV_FIELDS,
    OUTCOME_COLORS,
    ROW_FIELDS,
    STATE_COLORS,
    TIMELINE_MAX_ROWS,
    audit_rows,
    export_audit,
    render_html,
    verify_report,
)
from orchestrator.store import audit
from orchestrator.store.repo import Store

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """A real 40-task teardown on the simulator (about a second)."""
    return make_run(tmp_path_factory.mktemp("report") / "run.db")


@pytest.fixture(scope="module")
def store(real: RealRun) -> Iterator[Store]:
    s = Store(real.url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str]]:
    """A small synthetic run whose text fields try formula injection, HTML injection and terminal escapes."""
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('odd') / 'odd.db'}")
    run_id = synthetic_run(
        s, 12, ticket='=HYPERLINK("https://evil.example","x")', reason="@SUM(A1) <b>bold</b> & \"quoted\"",
        name_of=lambda i: "<script>alert(1)</script>" if i == 0 else f"+svc-{i}",
        worker="\x1b[31mred\x1b[0m:1:abcdef",
    )
    yield s, run_id
    s.close()


@pytest.fixture(scope="module")
def page(store: Store, real: RealRun) -> str:
    report = render_html(store, real.run_id)
    assert report.ok and report.exit_code == 0
    return report.html


# -- audit rows and exports ----------------------------------------------------------------------------------


def test_audit_rows_have_the_documented_fields(store: Store, real: RealRun) -> None:
    rows = audit_rows(store, real.run_id)
    assert len(rows) == store.verify(real.run_id).records > 40
    assert ROW_FIELDS == (
        "run_id", "seq", "at", "job_id", "from_state", "to_state", "trigger", "remote_status", "outcome",
        "error_code", "request_ids", "actor", "worker", "ticket", "reason", "detail", "prev_hash", "hash",
    )
    for seq, row in enumerate(rows, 1):
        assert tuple(row) == ROW_FIELDS
        assert row["seq"] == seq
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["at"])
        assert set(row["actor"]) >= {"os_user", "host", "tool", "credential"}
        assert row["actor"]["credential"].startswith("iam-token:")
        assert row["worker"] and row["ticket"] == "CHG-1" and row["reason"] == "decommission"
    assert any(r["request_ids"] for r in rows)
    triggers = {r["trigger"] for r in rows}
    assert triggers >= {"run_started", "plan", "stop", "delete", "deleted", "run_finished"}


def _as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """An exported row back in the form that was hashed (actor as its compact JSON text)."""
    return {**row, "actor": json.dumps(row["actor"], sort_keys=True, separators=(",", ":"))}


def test_json_export_is_a_list_of_records_that_verifies_on_its_own(store: Store, real: RealRun) -> None:
    text = export_audit(store, real.run_id, "json")
    assert text.endswith("\n") and text.startswith("[\n  {")
    records = json.loads(text)
    assert records == audit_rows(store, real.run_id)
    for rec in records:
        assert {"worker", "actor", "ticket", "reason", "request_ids", "prev_hash", "hash"} <= set(rec)
        assert isinstance(rec["actor"], dict)
    # An auditor holding only the export (and the anchored head hash) can recompute the chain.
    run = store.run(real.run_id)
    assert run is not None
    v = audit.verify_chain(real.run_id, [_as_stored(r) for r in records], run.head_seq, run.head_hash)
    assert v.ok, v.problem


def _read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "no BOM: Excel would read the file as ANSI"
    reader = csv.DictReader(io.StringIO(text[1:], newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_FIELDS
    return list(reader)


def test_csv_export_opens_cleanly(store: Store, real: RealRun) -> None:
    text = export_audit(store, real.run_id, "csv")
    rows = _read_csv(text)
    expected = audit_rows(store, real.run_id)
    assert len(rows) == len(expected)
    assert text.count("\r\n") == len(rows) + 1  # RFC 4180 line ends, nothing embedded
    assert text.encode("utf-8").decode("utf-8-sig").startswith("run_id,seq,at,")
    assert "actor" not in rows[0]
    assert {f"actor_{k}" for k in ("os_user", "host", "tool", "credential")} <= set(rows[0])
    for row, rec in zip(rows, expected, strict=True):
        assert row["seq"] == str(rec["seq"])
        assert row["hash"] == rec["hash"] and row["prev_hash"] == rec["prev_hash"]
        assert row["actor_os_user"] == rec["actor"]["os_user"]
        assert row["actor_credential"] == rec["actor"]["credential"]
        assert row["worker"] == rec["worker"]
        assert row["job_id"] == (rec["job_id"] or "")


def test_csv_export_is_formula_injection_safe(odd: tuple[Store, str]) -> None:
    store, run_id = odd
    rows = _read_csv(export_audit(store, run_id, "csv"))
    assert rows
    for row in rows:
        assert row["ticket"] == '\'=HYPERLINK("https://evil.example","x")'
        assert row["reason"] == "'@SUM(A1) <b>bold</b> & \"quoted\""
        for name, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS), (name, cell)
    # Only the spreadsheet format is escaped: JSON keeps the values as recorded.
    records = json.loads(export_audit(store, run_id, "json"))
    assert records[0]["ticket"] == '=HYPERLINK("https://evil.example","x")'


def test_table_export_lists_every_record(store: Store, real: RealRun) -> None:
    text = export_audit(store, real.run_id, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["seq", "time", "(UTC)", "job", "from→to", "trigger", "remote", "status",
                                "outcome", "worker"]
    body = lines[2:-1]
    records = audit_rows(store, real.run_id)
    assert [int(line.split()[0]) for line in body] == [r["seq"] for r in records]
    assert len({len(line) for line in lines[:2]}) <= 2
    for line, rec in zip(body, records, strict=True):
        assert (rec["job_id"] or "(run)") in line
        if rec["from_state"] and rec["to_state"]:
            assert f"{rec['from_state']}→{rec['to_state']}" in line
    assert lines[-1] == f"{len(records)} record(s); last hash {records[-1]['hash']}"
    assert max(len(line) for line in lines) < 200


def test_table_export_is_terminal_safe(odd: tuple[Store, str]) -> None:
    store, run_id = odd
    text = export_audit(store, run_id, "table")
    assert "\x1b" not in text and "\r" not in text
    assert " [31mred [0m:1:abcdef" in text


def test_unknown_format_and_unknown_run_are_refused(store: Store, real: RealRun) -> None:
    with pytest.raises(ValueError, match="unknown audit format 'xml'"):
        export_audit(store, real.run_id, "xml")
    for call in (audit_rows, verify_report, render_html):
        with pytest.raises(StoreError, match="no run"):
            call(store, "0" * 32)


def test_verify_report(store: Store, real: RealRun) -> None:
    report = verify_report(store, real.run_id)
    run = store.run(real.run_id)
    assert run is not None
    assert report == {"run_id": real.run_id, "ok": True, "records": run.head_seq, "head_hash": run.head_hash,
                      "broken_seq": None, "problem": None}


# -- the HTML report -----------------------------------------------------------------------------------------


def test_html_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<iframe|<object|<embed|<img|@import|url\(", page, re.I)
    # No attribute that could fetch anything, and no URL in an attribute at all.
    assert not re.search(r"\s(?:src|href|srcset|action|poster|xlink:href)\s*=", page, re.I)
    assert not re.search(r"=\s*[\"']?(?:https?:)?//", page, re.I)
    assert not re.search(r"\son[a-z]+\s*=", page, re.I)  # no inline event handlers either
    assert "default-src 'none'" in page


def test_html_summary_says_who_when_why_and_the_head_hash(store: Store, real: RealRun, page: str) -> None:
    run = store.run(real.run_id)
    assert run is not None
    for text in (run.id, run.ticket, run.reason, run.consent, run.head_hash, run.actor["os_user"],
                 run.actor["host"], run.actor["credential"], run.actor["tool"], run.project_id):
        assert f"{text}" in page, text
    assert run.created_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert run.finished_at is not None and run.finished_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert "&#10003; audit chain intact" in page and "BROKEN" not in page
    for outcome, n in real.summary.counts.items():
        assert f"<b>{n}</b><span>{outcome}</span>" in page
    calls = store.api_calls(real.run_id)
    assert f"HTTP exchanges <small>{len(calls)}</small>" in page
    assert "Error codes" in page


def test_html_has_every_task(store: Store, real: RealRun, page: str) -> None:
    tasks = store.tasks(real.run_id)
    assert len(tasks) >= 35
    for t in tasks:
        assert t.job_id in page
        assert t.name and t.name in page
    assert page.count('<td class="idx">') >= len(tasks)


def _svg(page: str) -> ET.Element:
    match = re.search(r"<svg .*?</svg>", page, re.S)
    assert match, "no inline SVG"
    return ET.fromstring(match.group(0))  # well-formed XML: everything in it is escaped


def test_timeline_draws_one_row_per_task_with_state_segments(store: Store, real: RealRun, page: str) -> None:
    svg = _svg(page)
    labels = [el for el in svg.iter("text") if el.get("text-anchor") == "end"]
    assert len(labels) == len(store.tasks(real.run_id))
    fills = {el.get("fill") for el in svg.iter("rect")}
    assert {STATE_COLORS[s] for s in ("pending", "stopping", "releasing", "deletable", "deleting")} <= fills
    diamonds = {el.get("fill") for el in svg.iter("path")}
    assert OUTCOME_COLORS["deleted"] in diamonds and OUTCOME_COLORS["blocked"] in diamonds
    ticks = [el.text for el in svg.iter("text") if el.get("text-anchor") == "middle"]
    assert ticks and ticks[0] == "0 s"


def test_html_escapes_everything(odd: tuple[Store, str]) -> None:
    store, run_id = odd
    page = render_html(store, run_id).html
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "@SUM(A1) &lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page
    assert "=HYPERLINK(&quot;https://evil.example&quot;,&quot;x&quot;)" in page
    _svg(page)


def test_html_shows_the_http_histogram_and_every_outcome(odd: tuple[Store, str]) -> None:
    store, run_id = odd
    page = render_html(store, run_id).html
    assert "HTTP exchanges <small>2</small>" in page
    assert "<code>APIGW.0308</code>" in page and "<code>none</code>" in page
    for outcome in ("deleted", "failed", "timed_out", "skipped", "blocked", "pending"):
        assert f'<span class="badge" style="--c:{OUTCOME_COLORS[outcome]}">{outcome}</span>' in page
    assert "not finished (interrupted)" in page


def test_html_of_a_tampered_run_says_where_it_broke(real: RealRun, tmp_path: Path) -> None:
    run = copy_run(real, tmp_path / "tampered.db")
    with Attacker(run.path) as attacker:
        attacker.drop_triggers()
        attacker.execute("UPDATE audit_records SET outcome = 'deleted' WHERE run_id = ? AND seq = 45",
                         (run.run_id,))
    store = Store(run.url)
    try:
        report = render_html(store, run.run_id)
    finally:
        store.close()
    page = report.html
    assert "audit chain BROKEN" in page
    assert "Broken at record seq 45." in page
    assert "intact" not in page
    # The report is still written, with its red banner, and the caller is told: `report` exits 4.
    assert '<div class="banner bad">' in page and "BROKEN at record seq 45" in page
    assert not report.ok and report.verification.broken_seq == 45 and report.exit_code == 4


def test_report_command_exits_4_on_a_broken_chain_and_still_writes_the_report(real: RealRun, tmp_path: Path) -> None:
    """The CLI: `report` on an edited trail writes the file with its red banner, says so, and exits 4 (text and
    JSON); on the intact original it exits 0."""
    from tests.kit import cli

    run = copy_run(real, tmp_path / "tampered.db")
    intact = cli(["report", run.run_id, "--html", str(tmp_path / "ok.html")], {"DRS_TEARDOWN_DB": run.url})
    assert intact.exit_code == 0, intact.output
    with Attacker(run.path) as attacker:
        attacker.drop_triggers()
        attacker.execute("UPDATE audit_records SET reason = 'nothing to see' WHERE run_id = ? AND seq = 12",
                         (run.run_id,))
    html = tmp_path / "broken.html"
    r = cli(["report", run.run_id, "--html", str(html)], {"DRS_TEARDOWN_DB": run.url})
    assert r.exit_code == 4 and "BROKEN" in r.stderr, r.output
    assert '<div class="banner bad">' in html.read_text() and "BROKEN at record seq 12" in html.read_text()
    j = cli(["report", run.run_id, "--html", str(tmp_path / "b2.html"), "--output", "json"],
            {"DRS_TEARDOWN_DB": run.url})
    assert j.exit_code == 4 and json.loads(j.stdout) == {"run_id": run.run_id, "html": str(tmp_path / "b2.html"),
                                                         "chain_ok": False, "exit_code": 4}
    assert (tmp_path / "b2.html").exists()


def test_html_stays_sane_for_2000_tasks(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        run_id = synthetic_run(store, 2000)
        started = time.monotonic()
        page = render_html(store, run_id).html
        took = time.monotonic() - started
        tasks = store.tasks(run_id)
    finally:
        store.close()
    assert took < 15
    assert len(page) < 5_000_000
    for t in tasks:
        assert t.job_id in page
    # More than TIMELINE_MAX_ROWS tasks: no lanes, a histogram of all of them; nothing is "not drawn".
    svg = _svg(page)
    assert not [el for el in svg.iter("text") if el.get("text-anchor") == "end" and "svc-" in (el.text or "")]
    assert "not drawn" not in page
    assert f"all {2000:,} tasks by state over time" in page
    fills = {el.get("fill") for el in svg.iter("rect")}
    for outcome in ("deleted", "failed", "timed_out", "blocked", "skipped"):
        assert OUTCOME_COLORS[outcome] in fills, outcome
    assert TIMELINE_MAX_ROWS < 2000


# -- in a real browser ---------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                  "(apt-get install -y chromium)")
def test_the_report_renders_in_chromium(page: str, tmp_path: Path) -> None:
    html_file, png = tmp_path / "report.html", tmp_path / "report.png"
    html_file.write_text(page, encoding="utf-8")
    screenshot(html_file, png, tmp_path / "profile")
    assert png.exists()
    assert png.stat().st_size > 60_000, "a screenshot this small is a blank page"
    image = read_png(png.read_bytes())
    assert (image.width, image.height) == (1400, 2000)
    colours = image.colours(step=3)
    assert len(colours) > 100, "not a real page: too few colours"
    # The timeline is drawn: bar interiors show the state palette, and the outcome cards theirs.
    for colour in (STATE_COLORS["releasing"], STATE_COLORS["deleting"], OUTCOME_COLORS["deleted"]):
        assert any(near(px, rgb(colour)) for px in colours), f"{colour} not on screen"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


@pytest.mark.parametrize(("span", "labels"), [
    (0.75, ["0 s", "0.1 s", "0.2 s", "0.3 s", "0.4 s", "0.5 s", "0.6 s", "0.7 s"]),
    (150, ["0 s", "30 s", "60 s", "90 s", "120 s", "150 s"]),
    (5400, ["0 min", "15 min", "30 min", "45 min", "60 min", "75 min", "90 min"]),
    (4 * 3600 + 120, ["0 h", "1 h", "2 h", "3 h", "4 h"]),
    (6 * 86400, ["0 d", "1 d", "2 d", "3 d", "4 d", "5 d", "6 d"]),
])
def test_time_axis_ticks_are_round_and_few(span: float, labels: list[str]) -> None:
    from orchestrator.report.timeline import tick_label, ticks

    step, marks = ticks(span)
    assert [tick_label(t, step) for t in marks] == labels
