"""The self-contained HTML report of a run.

One file with inline CSS and inline SVG: no scripts, no fonts, images or stylesheets fetched (its
Content-Security-Policy forbids them too), so it can be attached to a change ticket and opened offline years
later. A broken chain still gives a report, with a red banner, and the caller learns it from the result.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import EXIT_OK, EXIT_STORE
from orchestrator.lifecycle import OUTCOMES
from orchestrator.report.assets import CSS
from orchestrator.report.export import require_run
from orchestrator.report.formatting import duration, esc, plural, when
from orchestrator.report.story import RunStory, tell
from orchestrator.report.tables import card, http_card, targets_table, tasks_table, trail_card
from orchestrator.report.timeline import OUTCOME_COLORS, TIMELINE_MAX_ROWS, legend, timeline_svg
from orchestrator.store import audit
from orchestrator.store.repo import Store
from orchestrator.store.schema import Run
from orchestrator.version import __version__


@dataclass(frozen=True)
class HtmlReport:
    """The document and the chain verification it was written with (a broken chain: exit 4)."""

    html: str
    verification: audit.Verification

    @property
    def ok(self) -> bool:
        return self.verification.ok

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.verification.ok else EXIT_STORE


def render_html(store: Store, run_id: str, *, max_rows: int = TIMELINE_MAX_ROWS) -> HtmlReport:
    """Summary, verification, timeline, every task's story, HTTP exchanges and the chain's run events."""
    run = require_run(store, run_id)
    tasks = store.tasks(run_id)
    records = store.records(run_id)
    calls = store.api_calls(run_id)
    verification = store.verify(run_id)
    story = tell(run, tasks, records)
    counts = Counter(t.outcome for t in story.tasks)
    body = "\n".join(part for part in (
        _banner(verification),
        _header(run, verification),
        _summary(run, story),
        _outcome(counts, len(tasks)),
        targets_table(story),
        _verification(run, verification),
        _timeline(story, max_rows),
        tasks_table(story),
        http_card(calls, records),
        trail_card(story, records),
        _footer(),
    ) if part)
    title = f"drs-teardown report · run {run.id}"
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # Belt and braces: even a tag that slipped through could load nothing and run nothing.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="drs-teardown {esc(__version__)}">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return HtmlReport(page, verification)


# Identifiers read better (and copy cleanly) in a fixed-width font.
_MONO = frozenset({"Credential", "Worker", "Workers", "Project", "Plan hash"})


def _dl(items: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(
        f"<dt>{esc(k)}</dt><dd>{f'<code>{esc(v)}</code>' if k in _MONO else esc(v)}</dd>" for k, v in items
    ) + "</dl>"


def _banner(v: audit.Verification) -> str:
    if v.ok:
        return ""
    return (f'<div class="banner bad">&#10007; The audit chain is BROKEN at record seq {esc(v.broken_seq)}: '
            f"{esc(v.problem)}. Nothing after that record is proven.</div>")


def _header(run: Run, v: audit.Verification) -> str:
    status = {"finished": "ok", "running": "warn", "interrupted": "warn"}.get(run.status, "bad")
    code = {None: "", 0: "ok", 3: "warn", 130: "warn"}.get(run.exit_code, "bad")
    chain = ('<span class="pill ok">&#10003; audit chain intact</span>' if v.ok
             else '<span class="pill bad">&#10007; audit chain BROKEN</span>')
    exit_code = "—" if run.exit_code is None else run.exit_code
    return (
        '<header>\n<div class="eyebrow">drs-teardown · teardown report</div>\n'
        f"<h1>Run <code>{esc(run.id)}</code></h1>\n"
        f'<div class="pills"><span class="pill {status}">{esc(run.status)}</span>'
        f'<span class="pill {code}">exit code {esc(exit_code)}</span>{chain}</div>\n</header>'
    )


def _summary(run: Run, story: RunStory) -> str:
    actor = run.actor or {}
    workers = sorted({e.worker for e in story.events} | {r.worker for t in story.tasks for r in t.records})
    end = run.finished_at or story.end
    took = (end - run.created_at).total_seconds()
    idle = sum(g.seconds for g in story.gaps)
    resumes = sum(e.trigger == "run_resumed" for e in story.events)
    interruptions = sum(e.trigger == "run_interrupted" for e in story.events)
    who = [
        ("Operator", f"{actor.get('os_user', '—')} @ {actor.get('host', '—')}"),
        ("Credential", actor.get("credential", "—")),
        ("Tool", actor.get("tool", "—")),
        ("Workers" if len(workers) > 1 else "Worker", ", ".join(workers) or "—"),
        ("Ticket", run.ticket or "—"),
        ("Reason", run.reason or "—"),
        ("Consent", run.consent),
    ]
    span = duration(took) if run.finished_at else f"{duration(took)} so far"
    if idle:
        span += f" ({duration(idle)} of it interrupted)"
    when_ = [
        ("Created", when(run.created_at)),
        ("Finished", when(run.finished_at) if run.finished_at else f"not finished ({run.status})"),
        ("Duration", span),
        ("Interruptions", f"{interruptions:,} interrupted, {resumes:,} resumed" if interruptions or resumes
         else "none"),
        ("Project", run.project_id),
        ("Endpoint", run.endpoint),
        ("Selection", _selection(run.selection)),
        ("Plan hash", run.plan_hash or "— (planned live)"),
    ]
    return (f'<section class="grid">\n{card("Who", _dl(who))}\n{card("When and where", _dl(when_))}\n'
            "</section>")


def _selection(selection: Mapping[str, Any] | None) -> str:
    """The filters that were set, e.g. `all` or `name_glob="crm-*", status="PAUSING"`."""
    parts = []
    for key, value in sorted((selection or {}).items()):
        if value in (None, False, [], {}, ""):
            continue
        parts.append(key if value is True else f"{key}={json.dumps(value, ensure_ascii=False)}")
    return ", ".join(parts) or "—"


def _outcome(counts: Counter[str], total: int) -> str:
    cards = "".join(
        f'<div class="count{"" if counts[o] else " zero"}" style="--c:{OUTCOME_COLORS[o]}">'
        f"<b>{counts[o]:,}</b><span>{esc(o)}</span></div>"
        for o in OUTCOMES
    )
    bar = "".join(
        f'<span style="width:{100 * counts[o] / total:.3f}%;background:{OUTCOME_COLORS[o]}" '
        f'title="{esc(o)}: {counts[o]:,}"></span>'
        for o in OUTCOMES if counts[o]
    )
    inner = f'<div class="counts">{cards}</div>\n<div class="bar">{bar}</div>'
    return card("Outcome", inner, small=plural(total, "task"))


def _verification(run: Run, v: audit.Verification) -> str:
    if v.ok:
        verdict = (f'<p class="verdict ok"><strong>&#10003; Intact.</strong> All {v.records:,} audit records '
                   "recompute to the hash chain, and the run's head matches the last record.</p>")
        hashes = [("Head hash (anchor it elsewhere)", v.head_hash)]
    else:
        verdict = (f'<p class="verdict bad"><strong>&#10007; Broken at record seq {esc(v.broken_seq)}.'
                   f"</strong> {esc(v.problem)}. The {v.records:,} records before it verify; treat the rest "
                   "of this report as unproven.</p>")
        hashes = [("Head recorded on the run", run.head_hash), ("Last hash that verifies", v.head_hash)]
    rows = "".join(f'<div class="hash"><span>{esc(k)}</span><code>{esc(h)}</code></div>' for k, h in hashes)
    note = ('<p class="note">Re-check at any time with <code>drs-teardown verify '
            f"{esc(run.id)}</code>. Each record's SHA-256 covers all its fields and the previous record's "
            "hash.</p>")
    return card("Audit verification", f"{verdict}\n{rows}\n{note}", cls="ok-edge" if v.ok else "bad-edge")


def _timeline(story: RunStory, max_rows: int) -> str:
    n = len(story.tasks)
    histogram = n > max_rows
    what = (f"all {n:,} tasks by state over time (more than {max_rows:,}: one lane each would not be "
            "readable); each task's own story is in the table below" if histogram
            else "each task's local state, from the audit trail")
    inner = f"{legend(histogram=histogram)}\n{timeline_svg(story, max_rows=max_rows)}"
    return card("Timeline", inner, small=f"{what} · t = 0 at {when(story.start)}", anchor="timeline")


def _footer() -> str:
    return (f"<footer>Generated {esc(when(datetime.now(UTC)))} by drs-teardown {esc(__version__)} from the "
            "run's database. Self-contained: no scripts, no external resources.</footer>")
