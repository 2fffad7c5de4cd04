"""Audit export (table, JSON, CSV), the verification summary and the self-contained HTML report of a run.

Everything here reads the store; nothing writes. The HTML report is one file with inline CSS and inline SVG:
no scripts, no fonts, images or stylesheets fetched (its Content-Security-Policy forbids them too), so it can
be attached to a change ticket and opened offline years later.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.errors import StoreError
from orchestrator.lifecycle import OUTCOME_ORDER, OUTCOMES, TERMINAL, outcome_of
from orchestrator.store import audit
from orchestrator.store.models import ApiCall, AuditRecord, Run, Task
from orchestrator.store.repo import Store, record_dict
from orchestrator.version import __version__

FORMATS: tuple[str, ...] = ("table", "json", "csv")
ROW_FIELDS: tuple[str, ...] = (*audit.CHAIN_FIELDS, "hash")
ACTOR_FIELDS: tuple[str, ...] = ("os_user", "host", "tool", "credential")
CSV_FIELDS: tuple[str, ...] = tuple(
    name for f in ROW_FIELDS for name in ([f"actor_{a}" for a in ACTOR_FIELDS] if f == "actor" else [f])
)
# A spreadsheet evaluates a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
TIMELINE_MAX_ROWS = 150

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# -- rows and exports ----------------------------------------------------------------------------------------


def audit_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every audit record of a run in seq order, as JSON-ready dicts (actor parsed, `at` ISO-8601 UTC)."""
    _require_run(store, run_id)
    return [_row(r) for r in store.records(run_id)]


def _row(record: AuditRecord) -> dict[str, Any]:
    row = record_dict(record)
    row["at"] = audit.format_time(row["at"])
    row["actor"] = _parse_actor(row["actor"])
    return {name: row.get(name) for name in ROW_FIELDS}


def _parse_actor(text: str | None) -> dict[str, Any]:
    """The actor JSON as stored; text that does not parse (tampering, a bug) is kept verbatim as `raw`."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": text}


def export_audit(store: Store, run_id: str, fmt: str) -> str:
    """The trail of a run as `table` (fixed-width text), `json` (a list of records) or `csv` (UTF-8, BOM)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown audit format {fmt!r} (use one of {', '.join(FORMATS)})")
    rows = audit_rows(store, run_id)
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(rows)
    return _table(rows)


def _csv(rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    # The BOM tells Excel the file is UTF-8; the csv module writes RFC 4180 (CRLF, doubled quotes).
    out.write("\ufeff")
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        flat: dict[str, Any] = {}
        for name in ROW_FIELDS:
            if name == "actor":
                actor = row.get("actor") or {}
                for a in ACTOR_FIELDS:
                    flat[f"actor_{a}"] = _cell(actor.get(a))
            else:
                flat[name] = _cell(row.get(name))
        writer.writerow(flat)
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: None as empty; text a spreadsheet would run as a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


# (title, key, width cap); None: as wide as the widest value.
_TABLE_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("seq", "seq", None),
    ("time (UTC)", "time", None),
    ("job", "job", 36),
    ("from→to", "move", 21),
    ("trigger", "trigger", 15),
    ("remote status", "remote", 31),
    ("outcome", "outcome", 9),
    ("worker", "worker", 28),
)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [_table_cells(r) for r in rows]
    widths = []
    for title, key, cap in _TABLE_COLUMNS:
        widest = max([len(title), *(len(c[key]) for c in cells)])
        widths.append(widest if cap is None else min(widest, max(cap, len(title))))
    titles = (title for title, _, _ in _TABLE_COLUMNS)
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for c in cells:
        parts = []
        for (_, key, _), w in zip(_TABLE_COLUMNS, widths, strict=True):
            text = _clip(c[key], w)
            parts.append(text.rjust(w) if key == "seq" else text.ljust(w))
        lines.append("  ".join(parts).rstrip())
    head = rows[-1]["hash"] if rows else "-"
    lines.append(f"{len(rows)} record(s); last hash {head}")
    return "\n".join(lines) + "\n"


def _table_cells(r: Mapping[str, Any]) -> dict[str, str]:
    move = f"{r['from_state'] or '·'}→{r['to_state'] or '·'}" if r["from_state"] or r["to_state"] else ""
    at = str(r["at"])
    return {
        "seq": str(r["seq"]),
        "time": at[:10] + " " + at[11:23] if len(at) >= 23 else at,  # to the millisecond; JSON/CSV have µs
        "job": _plain(r["job_id"] or "(run)"),
        "move": move,
        "trigger": _plain(r["trigger"]),
        "remote": _plain(r["remote_status"]),
        "outcome": _plain(r["outcome"]),
        "worker": _plain(r["worker"]),
    }


def _plain(value: Any) -> str:
    """One line of terminal-safe text: control characters (escapes, newlines) become spaces."""
    return "" if value is None else _CONTROL.sub(" ", str(value))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def verify_report(store: Store, run_id: str) -> dict[str, Any]:
    """The chain verification of one run as a JSON-ready dict."""
    v = store.verify(run_id)
    return {"run_id": v.run_id, "ok": v.ok, "records": v.records, "head_hash": v.head_hash,
            "broken_seq": v.broken_seq, "problem": v.problem}


def _require_run(store: Store, run_id: str) -> Run:
    run: Run | None = store.run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id}")
    return run


# -- HTML report ---------------------------------------------------------------------------------------------

STATE_COLORS: dict[str, str] = {
    "pending": "#cbd5e1", "stopping": "#f59e0b", "releasing": "#3b82f6", "deletable": "#8b5cf6",
    "deleting": "#ec4899",
}
OUTCOME_COLORS: dict[str, str] = {
    "deleted": "#16a34a", "skipped": "#64748b", "blocked": "#ea580c", "failed": "#dc2626",
    "timed_out": "#991b1b", "pending": "#7c3aed",
}
# Problems first: what an operator or auditor must look at.
_RANK = {o: i for i, o in enumerate(OUTCOME_ORDER)}
_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class Segment:
    """A task in one local state from `start` to `end`."""

    state: str
    start: datetime
    end: datetime
    trigger: str


@dataclass(frozen=True)
class Lane:
    """One timeline row: a task's states over time and, if it ended, how and when."""

    task: Task
    segments: tuple[Segment, ...]
    outcome: str
    ended_at: datetime | None


def render_html(store: Store, run_id: str) -> str:
    """One self-contained HTML document: summary, verification, timeline, tasks and HTTP exchanges."""
    run = _require_run(store, run_id)
    tasks = store.tasks(run_id)
    records = store.records(run_id)
    calls = store.api_calls(run_id)
    verification = store.verify(run_id)
    start, end = _time_range(run, records)
    counts = Counter(outcome_of(t.state) for t in tasks)
    body = "\n".join([
        _header(run, verification),
        _summary(run, records),
        _outcome(counts, len(tasks)),
        _verification(run, verification),
        _timeline(_lanes(tasks, records, end), start, end),
        _tasks_table(tasks),
        _http(calls),
        _trail(records),
        _footer(),
    ])
    title = f"drs-teardown report · run {run.id}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # Belt and braces: even a tag that slipped through could load nothing and run nothing.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="drs-teardown {_e(__version__)}">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# Identifiers read better (and copy cleanly) in a fixed-width font.
_MONO = frozenset({"Credential", "Worker", "Workers", "Project", "Plan hash"})


def _dl(items: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(
        f"<dt>{_e(k)}</dt><dd>{f'<code>{_e(v)}</code>' if k in _MONO else _e(v)}</dd>" for k, v in items
    ) + "</dl>"


def _card(title: str, inner: str, *, small: str = "", cls: str = "") -> str:
    sub = f" <small>{_e(small)}</small>" if small else ""
    return f'<section class="card {cls}">\n<h2>{_e(title)}{sub}</h2>\n{inner}\n</section>'


def _header(run: Run, v: audit.Verification) -> str:
    status = {"finished": "ok", "running": "warn", "interrupted": "warn"}.get(run.status, "bad")
    code = {None: "", 0: "ok", 3: "warn", 130: "warn"}.get(run.exit_code, "bad")
    chain = ('<span class="pill ok">&#10003; audit chain intact</span>' if v.ok
             else '<span class="pill bad">&#10007; audit chain BROKEN</span>')
    exit_code = "—" if run.exit_code is None else run.exit_code
    return (
        '<header>\n<div class="eyebrow">drs-teardown · teardown report</div>\n'
        f"<h1>Run <code>{_e(run.id)}</code></h1>\n"
        f'<div class="pills"><span class="pill {status}">{_e(run.status)}</span>'
        f'<span class="pill {code}">exit code {_e(exit_code)}</span>{chain}</div>\n</header>'
    )


def _summary(run: Run, records: Sequence[AuditRecord]) -> str:
    actor = run.actor or {}
    workers = sorted({r.worker for r in records})
    end = run.finished_at or (records[-1].at if records else run.created_at)
    took = _duration((end - run.created_at).total_seconds())
    who = [
        ("Operator", f"{actor.get('os_user', '—')} @ {actor.get('host', '—')}"),
        ("Credential", actor.get("credential", "—")),
        ("Tool", actor.get("tool", "—")),
        ("Workers" if len(workers) > 1 else "Worker", ", ".join(workers) or "—"),
        ("Ticket", run.ticket or "—"),
        ("Reason", run.reason or "—"),
        ("Consent", run.consent),
    ]
    when = [
        ("Created", _when(run.created_at)),
        ("Finished", _when(run.finished_at) if run.finished_at else f"not finished ({run.status})"),
        ("Duration", took if run.finished_at else f"{took} so far"),
        ("Project", run.project_id),
        ("Endpoint", run.endpoint),
        ("Selection", _selection(run.selection)),
        ("Plan hash", run.plan_hash or "— (planned live)"),
    ]
    return (f'<section class="grid">\n{_card("Who", _dl(who))}\n{_card("When and where", _dl(when))}\n'
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
        f"<b>{counts[o]:,}</b><span>{_e(o)}</span></div>"
        for o in OUTCOMES
    )
    bar = "".join(
        f'<span style="width:{100 * counts[o] / total:.3f}%;background:{OUTCOME_COLORS[o]}" '
        f'title="{_e(o)}: {counts[o]:,}"></span>'
        for o in OUTCOMES if counts[o]
    )
    inner = f'<div class="counts">{cards}</div>\n<div class="bar">{bar}</div>'
    return _card("Outcome", inner, small=f"{total:,} task{'' if total == 1 else 's'}")


def _verification(run: Run, v: audit.Verification) -> str:
    if v.ok:
        verdict = (f'<p class="verdict ok"><strong>&#10003; Intact.</strong> All {v.records:,} audit records '
                   "recompute to the hash chain, and the run's head matches the last record.</p>")
        hashes = [("Head hash (anchor it elsewhere)", v.head_hash)]
    else:
        verdict = (f'<p class="verdict bad"><strong>&#10007; Broken at record seq {_e(v.broken_seq)}.'
                   f"</strong> {_e(v.problem)}. The {v.records:,} records before it verify; treat the rest "
                   "of this report as unproven.</p>")
        hashes = [("Head recorded on the run", run.head_hash), ("Last hash that verifies", v.head_hash)]
    rows = "".join(f'<div class="hash"><span>{_e(k)}</span><code>{_e(h)}</code></div>' for k, h in hashes)
    note = ('<p class="note">Re-check at any time with <code>drs-teardown verify '
            f"{_e(run.id)}</code>. Each record's SHA-256 covers all its fields and the previous record's "
            "hash.</p>")
    return _card("Audit verification", f"{verdict}\n{rows}\n{note}", cls="ok-edge" if v.ok else "bad-edge")


# -- the timeline --------------------------------------------------------------------------------------------


def _time_range(run: Run, records: Sequence[AuditRecord]) -> tuple[datetime, datetime]:
    times = [r.at for r in records]
    start = min([run.created_at, *times])
    end = max([run.finished_at or start, *times])
    return start, max(end, start + timedelta(seconds=1))


def _lanes(tasks: Sequence[Task], records: Sequence[AuditRecord], end: datetime) -> list[Lane]:
    """Each task's local states over time, from its audit records (repeated states are merged)."""
    by_job: dict[str, list[AuditRecord]] = defaultdict(list)
    for r in records:
        if r.job_id is not None and r.to_state:
            by_job[r.job_id].append(r)
    lanes = []
    for task in tasks:
        segments: list[Segment] = []
        ended_at: datetime | None = None
        current: AuditRecord | None = None
        for r in by_job.get(task.job_id, []):
            if current is not None and current.to_state != r.to_state:
                segments.append(Segment(str(current.to_state), current.at, r.at, current.trigger))
            if current is None or current.to_state != r.to_state:
                current = r
            if r.to_state in _TERMINAL_VALUES:
                ended_at, current = r.at, None
                break
        if current is not None:  # still in flight when the trail ends
            segments.append(Segment(str(current.to_state), current.at, end, current.trigger))
        lanes.append(Lane(task, tuple(segments), outcome_of(task.state), ended_at))
    return lanes


_TICK_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300,
               600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def _ticks(span: float, target: int = 8) -> tuple[float, list[float]]:
    """A round step giving at most `target` intervals over `span` seconds, and the ticks from 0."""
    step = next((s for s in _TICK_STEPS if span / s <= target), span / target)
    return step, [i * step for i in range(int(span / step + 1e-9) + 1)]


def _tick_label(t: float, step: float) -> str:
    if step < 60:
        return f"{round(t, 3):g} s"
    if step < 3600:
        minutes, secs = divmod(round(t), 60)
        return f"{minutes}:{secs:02d}" if secs else f"{minutes} min"
    if step < 86400:
        hours, rest = divmod(round(t), 3600)
        return f"{hours}:{rest // 60:02d} h" if rest else f"{hours} h"
    return f"{t / 86400:g} d"


def _pick_lanes(lanes: Sequence[Lane], limit: int) -> list[Lane]:
    """All lanes when they fit; else problem tasks first, in turn from each kind of problem, then the rest.

    The lanes chosen keep their task order.
    """
    if len(lanes) <= limit:
        return list(lanes)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lane in enumerate(lanes):
        groups[lane.outcome].append(i)
    chosen: list[int] = []
    for tier in (OUTCOME_ORDER[:4], OUTCOME_ORDER[4:]):
        for batch in itertools.zip_longest(*(groups[o] for o in tier)):
            chosen.extend(i for i in batch if i is not None)
    return [lanes[i] for i in sorted(chosen[:limit])]


def _timeline(lanes: Sequence[Lane], start: datetime, end: datetime) -> str:
    shown = _pick_lanes(lanes, TIMELINE_MAX_ROWS)
    hidden = len(lanes) - len(shown)
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(s)}</span>' for s, c in STATE_COLORS.items())
    legend += "".join(f'<span><i class="dia" style="background:{OUTCOME_COLORS[o]}"></i>{_e(o)}</span>'
                      for o in OUTCOMES if o != "pending")
    legend += '<span class="muted">bars: local state · diamonds: final outcome</span>'
    note = (f'<p class="note">{len(shown):,} of {len(lanes):,} tasks drawn, problem tasks first: '
            f"<strong>{hidden:,} not drawn</strong>. Every task is in the table below.</p>" if hidden else "")
    inner = f'<div class="legend">{legend}</div>\n{_timeline_svg(shown, start, end, hidden)}\n{note}'
    return _card("Timeline", inner, small=f"each task's local state, from the audit trail · t = 0 at "
                                          f"{_when(start)}")


def _timeline_svg(lanes: Sequence[Lane], start: datetime, end: datetime, hidden: int) -> str:
    width, label_w, right = 1100, 250, 24
    row_h = 18 if len(lanes) <= 60 else 12
    bar_h = row_h - 6
    top = 26
    plot_w = width - label_w - right
    plot_bottom = top + row_h * max(len(lanes), 1)
    height = plot_bottom + 24 + (18 if hidden else 0)
    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        return label_w + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    out = [f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="Timeline of each task\'s local state" font-size="11">']
    out += [f'<rect x="0" y="{top + i * row_h}" width="{width}" height="{row_h}" fill="#f8fafc"/>'
            for i in range(0, len(lanes), 2)]
    step, ticks = _ticks(span)
    for tick in ticks:
        tx, label = label_w + plot_w * tick / span, _e(_tick_label(tick, step))
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{plot_bottom}" stroke="#e2e8f0"/>')
        for ty in (top - 8, plot_bottom + 14):
            out.append(f'<text x="{tx:.1f}" y="{ty}" text-anchor="middle" fill="#64748b">{label}</text>')
    for i, lane in enumerate(lanes):
        out += _lane_svg(lane, top + i * row_h, row_h, bar_h, label_w, x)
    if not lanes:
        out.append(f'<text x="{label_w + 8}" y="{top + 13}" fill="#64748b">no tasks</text>')
    out.append(f'<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{plot_bottom}" stroke="#94a3b8"/>')
    if hidden:
        out.append(f'<text x="{label_w}" y="{height - 6}" fill="#b45309" font-weight="600">'
                   f"+ {hidden:,} more tasks not drawn (see the task table)</text>")
    out.append("</svg>")
    return "\n".join(out)


def _lane_svg(lane: Lane, y: int, row_h: int, bar_h: int, label_w: int,
              x: Callable[[datetime], float]) -> list[str]:
    t = lane.task
    who = t.name or t.job_id
    label = _clip(who, 30) + (f"  {t.job_id[:8]}" if t.name else "")
    out = [f'<text x="{label_w - 10}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#334155">'
           f"<title>{_e(t.job_id)} {_e(t.name or '')}</title>{_e(label)}</text>"]
    for seg in lane.segments:
        x0 = x(seg.start)
        w = max(x(seg.end) - x0, 2.0)  # an instant still shows
        tip = (f"{who}: {seg.state} for {_duration((seg.end - seg.start).total_seconds())} "
               f"from {_when(seg.start)} ({seg.trigger})")
        out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{bar_h}" rx="2" '
                   f'fill="{STATE_COLORS.get(seg.state, "#94a3b8")}"><title>{_e(tip)}</title></rect>')
    if lane.ended_at is not None:
        cx, cy, r = x(lane.ended_at), y + row_h / 2, bar_h / 2 + 1
        tip = f"{who}: {lane.outcome} at {_when(lane.ended_at)}"
        out.append(f'<path d="M{cx:.1f} {cy - r:.1f} L{cx + r:.1f} {cy:.1f} L{cx:.1f} {cy + r:.1f} '
                   f'L{cx - r:.1f} {cy:.1f} Z" fill="{OUTCOME_COLORS.get(lane.outcome, "#64748b")}" '
                   f'stroke="#fff"><title>{_e(tip)}</title></path>')
    return out


# -- tables --------------------------------------------------------------------------------------------------


def _badge(outcome: str) -> str:
    return f'<span class="badge" style="--c:{OUTCOME_COLORS.get(outcome, "#64748b")}">{_e(outcome)}</span>'


def _kind(t: Task) -> str:
    """`sync · mysql`; an engine type that already names the use (cloudDataGuard-mysql) stands alone."""
    use, engine = t.db_use_type or "", t.engine_type or ""
    if use and engine.lower().startswith(use.lower()):
        return engine
    return " · ".join(x for x in (use, engine) if x)


def _tasks_table(tasks: Sequence[Task]) -> str:
    ordered = sorted(enumerate(tasks), key=lambda it: (_RANK.get(outcome_of(it[1].state), 0), it[0]))
    rows = []
    for n, (_, t) in enumerate(ordered, 1):
        outcome, state = outcome_of(t.state), t.state.value
        # The local state adds something only while a task is still in flight.
        where = "" if state == outcome else f' <span class="sub">{_e(state)}</span>'
        rows.append(
            f'<tr><td class="idx">{n}</td><td><code>{_e(t.job_id)}</code></td>'
            f'<td>{_e(t.name or "")}<div class="sub">{_e(_kind(t))}</div></td><td>{_e(t.planned_action)}</td>'
            f'<td>{_badge(outcome)}{where}</td><td><code>{_e(t.last_status or "")}</code></td>'
            f'<td><code>{_e(t.error_code or "")}</code></td><td class="why">{_e(t.reason or "")}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("#", "Job ID", "Name", "Plan", "Outcome", "Last remote status",
                                               "Error", "Reason"))
    table = (f'<table class="tasks"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(rows)
             + "\n</tbody></table>")
    return _card("Tasks", table, small=f"{len(tasks):,}, problems first")


def _mini_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "mini") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{v:,}</td>' if isinstance(v, int) else f"<td>{_e(v)}</td>"
                         for v in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _http(calls: Sequence[ApiCall]) -> str:
    if not calls:
        return _card("HTTP exchanges", '<p class="note">No HTTP exchange was recorded for this run.</p>',
                     small="0")
    by_api = Counter((c.api, c.method) for c in calls)
    statuses = Counter("no response" if c.http_status is None else str(c.http_status) for c in calls)
    errors = Counter(c.error_code or "none" for c in calls)
    durations = sorted(c.duration_ms for c in calls)
    p95 = durations[min(len(durations) - 1, int(0.95 * len(durations)))]
    stats = [("Exchanges", f"{len(calls):,}"),
             ("Retries (attempt > 1)", f"{sum(c.attempt > 1 for c in calls):,}"),
             ("Median duration", f"{statistics.median(durations):.1f} ms"),
             ("95th percentile", f"{p95:.1f} ms"),
             ("Slowest", f"{durations[-1]:.1f} ms")]
    api_table = _mini_table(("API", "Method", "Calls"), [(*k, n) for k, n in sorted(by_api.items())])
    inner = (
        f'<div class="grid3">\n<div>{_dl(stats)}</div>\n'
        f"<div><h3>By API</h3>{api_table}"
        f"<h3>By HTTP status</h3>{_mini_table(('Status', 'Calls'), sorted(statuses.items()))}</div>\n"
        f"<div><h3>Error codes</h3>{_histogram(errors)}</div>\n</div>\n"
        '<p class="note">Recorded per exchange: method, path, status, request id, duration, task ids and '
        "error code; never a header value, token or body.</p>"
    )
    return _card("HTTP exchanges", inner, small=f"{len(calls):,}")


def _histogram(counter: Counter[str]) -> str:
    top = max(counter.values())
    rows = []
    for code, n in sorted(counter.items(), key=lambda kv: (kv[0] == "none", -kv[1], kv[0])):
        color = "#94a3b8" if code == "none" else "#dc2626"
        rows.append(f'<div class="hrow"><code>{_e(code)}</code><span class="hbar"><i style="width:'
                    f'{100 * n / top:.2f}%;background:{color}"></i></span><b>{n:,}</b></div>')
    return '<div class="hist">' + "".join(rows) + "</div>"


def _trail(records: Sequence[AuditRecord]) -> str:
    triggers = Counter(r.trigger for r in records if r.job_id is not None)
    by_trigger = ", ".join(f"{k} {n:,}" for k, n in sorted(triggers.items(), key=lambda kv: (-kv[1], kv[0])))
    events = [(r.seq, _when(r.at), r.trigger, r.outcome or "", r.detail or "", r.hash[:16] + "…")
              for r in records if r.job_id is None]
    inner = (f'<p class="note">Task transitions by trigger: {_e(by_trigger or "none")}. The whole trail: '
             "<code>drs-teardown audit RUN_ID --format csv</code> (or json).</p>\n<h3>Run events</h3>"
             + _mini_table(("Seq", "At", "Event", "Outcome", "Detail", "Hash"), events, cls="mini wide"))
    return _card("Audit trail", inner, small=f"{len(records):,} records")


def _footer() -> str:
    return (f"<footer>Generated {_e(_when(datetime.now(UTC)))} by drs-teardown {_e(__version__)} from the "
            "run's database. Self-contained: no scripts, no external resources.</footer>")


CSS = """
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f1f5f9;--card:#fff;--ok:#16a34a;--bad:#dc2626;
--warn:#d97706}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 -apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 40px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace;
font-size:12.5px}
header{margin-bottom:18px}
.eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted);font-weight:600}
h1{font-size:24px;margin:4px 0 10px;font-weight:650}
h1 code{font-size:21px}
h2{font-size:16px;margin:0 0 12px;font-weight:650}
h2 small{font-weight:400;color:var(--muted);font-size:13px;margin-left:6px}
h3{font-size:13px;margin:4px 0 6px;color:var(--muted);font-weight:600;text-transform:uppercase;
letter-spacing:.04em}
.pills{display:flex;gap:8px;flex-wrap:wrap}
.pill{display:inline-block;padding:3px 10px;border-radius:999px;background:#e2e8f0;font-size:12.5px;
font-weight:600}
.pill.ok{background:#dcfce7;color:#166534}.pill.bad{background:#fee2e2;color:#991b1b}
.pill.warn{background:#fef3c7;color:#92400e}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin-bottom:16px;box-shadow:0 1px 2px rgba(15,23,42,.04)}
.ok-edge{border-left:5px solid var(--ok)}.bad-edge{border-left:5px solid var(--bad);background:#fff7f7}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.grid>.card{margin-bottom:16px}
.grid3{display:grid;grid-template-columns:1fr 1.1fr 1.3fr;gap:24px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}dd code{font-size:12.5px}
.counts{display:grid;grid-template-columns:repeat(6,1fr);gap:10px;margin-bottom:12px}
.count{border:1px solid var(--line);border-top:4px solid var(--c);border-radius:8px;padding:8px 12px}
.count.zero{opacity:.45}
.count b{display:block;font-size:22px;line-height:1.2}.count span{color:var(--muted);font-size:12.5px}
.bar{display:flex;height:12px;border-radius:6px;overflow:hidden;background:var(--line)}
.bar span{display:block;height:100%}
.verdict{margin:0 0 10px;font-size:15px}.verdict.ok strong{color:var(--ok)}
.verdict.bad strong{color:var(--bad)}
.hash{display:flex;gap:12px;align-items:baseline;margin:4px 0}
.hash span{color:var(--muted);min-width:230px}
.hash code{background:#f8fafc;border:1px solid var(--line);border-radius:6px;padding:4px 8px;
overflow-wrap:anywhere}
.note{color:var(--muted);font-size:12.5px;margin:10px 0 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12.5px;margin-bottom:8px;align-items:center}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend i.dia{width:9px;height:9px;transform:rotate(45deg);border-radius:1px;margin:0 7px 0 3px}
.legend .muted{color:var(--muted)}
svg.timeline{display:block;width:100%;height:auto}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;
letter-spacing:.03em;border-bottom:2px solid var(--line);padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:5px 8px;vertical-align:top}
table.tasks td{font-size:13px}table.tasks code{font-size:11.5px;white-space:nowrap}
.sub{color:var(--muted);font-size:11.5px}
table.tasks td:nth-child(3){min-width:180px}
table.tasks tbody tr:nth-child(even){background:#f8fafc}
td.num,td.idx{text-align:right;font-variant-numeric:tabular-nums}td.idx{color:var(--muted)}
td.why{color:#334155;max-width:320px;overflow-wrap:anywhere}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;
color:var(--c);background:color-mix(in srgb,var(--c) 12%,white);border:1px solid
color-mix(in srgb,var(--c) 35%,white)}
table.mini{width:auto;min-width:220px;margin-bottom:12px}table.mini.wide{width:100%}
table.mini.wide td:nth-child(2){white-space:nowrap}
table.mini td,table.mini th{padding:4px 8px;font-size:12.5px}
.hist{display:grid;grid-template-columns:max-content 1fr max-content;gap:7px 10px;align-items:center;
font-size:12.5px}
.hrow{display:contents}
.hrow b{text-align:right;font-variant-numeric:tabular-nums}
.hbar{background:#f1f5f9;border-radius:4px;height:12px;overflow:hidden}.hbar i{display:block;height:100%}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media (max-width:900px){.grid,.grid3{grid-template-columns:1fr}.counts{grid-template-columns:repeat(3,1fr)}}
@media print{body{background:#fff}main{max-width:none;padding:0}.card{box-shadow:none;break-inside:avoid-page}
table.tasks{break-inside:auto}}
"""
