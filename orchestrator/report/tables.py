"""The report's tables: every task with its story, the HTTP exchanges and error codes, the chain events and
the trigger legend, per-target figures. HTML fragments; no scripts (sorting and filtering are CSS only)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from orchestrator.lifecycle import OUTCOME_ORDER, OUTCOMES
from orchestrator.report.formatting import duration, esc, offset, plural, when
from orchestrator.report.story import CODE_MEANINGS, TRIGGER_MEANINGS, RunStory, TaskStory
from orchestrator.report.timeline import OUTCOME_COLORS
from orchestrator.store.schema import ApiCall, AuditRecord, Task

# Beyond this many tasks the per-task story folds into a <details> (the page stays light at 10,000 tasks).
OPEN_STORIES = 60


def card(title: str, inner: str, *, small: str = "", cls: str = "", anchor: str = "") -> str:
    sub = f" <small>{esc(small)}</small>" if small else ""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f'<section class="card {cls}"{ident}>\n<h2>{esc(title)}{sub}</h2>\n{inner}\n</section>'


def badge(outcome: str) -> str:
    return f'<span class="badge" style="--c:{OUTCOME_COLORS.get(outcome, "#64748b")}">{esc(outcome)}</span>'


def mini_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "mini") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{v:,}</td>' if isinstance(v, int) else f"<td>{esc(v)}</td>"
                         for v in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kind(t: Task) -> str:
    """`sync · mysql`; an engine type that already names the use (cloudDataGuard-mysql) stands alone."""
    use, engine = t.db_use_type or "", t.engine_type or ""
    if use and engine.lower().startswith(use.lower()):
        return engine
    return " · ".join(x for x in (use, engine) if x)


# -- tasks ----------------------------------------------------------------------------------------------------


def _controls(counts: Counter[str]) -> str:
    """Radio buttons the stylesheet reads: sort by outcome (problems first) or plan order; show one outcome."""
    sort = ('<span class="ctl-label">Sort</span>'
            '<input type="radio" name="sort" id="sort-outcome" checked><label for="sort-outcome">'
            "by outcome, problems first</label>"
            '<input type="radio" name="sort" id="sort-plan"><label for="sort-plan">in plan order</label>')
    show = ['<span class="ctl-label">Show</span><input type="radio" name="show" id="show-all" checked>'
            '<label for="show-all">all</label>']
    for o in OUTCOME_ORDER:
        if counts[o]:
            show.append(f'<input type="radio" name="show" id="show-{o}"><label for="show-{o}">'
                        f"{esc(o)} {counts[o]:,}</label>")
    return f'<div class="controls">{sort}</div><div class="controls">{"".join(show)}</div>'


def _attempt_line(story: TaskStory, start: datetime) -> list[str]:
    out = []
    n_stop = 0
    for a in story.attempts:
        if a.action == "delete":
            label = "delete" if a.trigger == "delete" else "delete re-sent"
        else:
            n_stop += 1
            label = f"stop {n_stop}: {a.action}" + (" (re-sent)" if a.trigger == "resend" else "")
        cls = ' class="esc"' if a.escalation else ""
        flag = '<b class="flag">escalated</b> ' if a.escalation else ""
        detail = a.detail.removeprefix(f"{a.action}: ")  # "terminate: PAUSING must be stopped first"
        out.append(f"<li{cls}><span class=\"t\">{esc(offset(a.at, start))}</span> {flag}<b>{esc(label)}</b> — "
                   f"{esc(detail)}</li>")
    return out


def _story_cell(story: TaskStory, start: datetime, folded: bool) -> str:
    """What happened to one task: attempts and escalations, errors (recovered or not), breakpoint."""
    head = []
    if story.stops:
        head.append(plural(story.stops, "stop"))
    if story.escalated:
        head.append("escalated to force_terminate")
    if story.breakpoint:
        head.append(story.breakpoint)
    summary = esc("; ".join(head))
    plain_run = (story.outcome in ("deleted", "skipped") and not story.codes and story.stops <= 1
                 and len(story.attempts) - story.stops <= 1)
    items = [] if folded and plain_run else _ordered(story, start)
    if not items:
        return f'<div class="story">{summary}</div>' if summary else ""
    lines = "<ol>" + "".join(items) + "</ol>"
    if folded:
        return f'<details class="story"><summary>{summary or "details"}</summary>{lines}</details>'
    return f'<div class="story"><div>{summary}</div>{lines}</div>'


_NOTABLE = frozenset({"requeue", "outcome_unknown", "fail", "time_out", "block", "vanished"})


def _ordered(story: TaskStory, start: datetime) -> list[str]:
    """The attempts and the notable records of a task, in trail order."""
    attempts = iter(_attempt_line(story, start))
    out = []
    for r in story.records:
        if r.trigger in ("stop", "resend", "delete", "redelete"):
            out.append(next(attempts))
        elif r.trigger in _NOTABLE and r.detail and r.detail != story.task.reason:
            out.append(f'<li class="ev"><span class="t">{esc(offset(r.at, start))}</span> '
                       f"<b>{esc(r.trigger)}</b> — {esc(r.detail)}</li>")
    return out


def _codes_cell(story: TaskStory) -> str:
    parts = []
    for c in story.codes:
        times = f" ×{c.count}" if c.count > 1 else ""
        if c.recovered:
            tip = (c.meaning + "; " if c.meaning else "") + "the task got past it (retried, then read back)"
            parts.append(f'<div class="code rec" title="{esc(tip)}"><code>{esc(c.code)}</code>{times} '
                         '<span class="rec-tag">recovered</span></div>')
        else:
            parts.append(f'<div class="code" title="{esc(c.meaning)}"><code>{esc(c.code)}</code>{times}</div>')
    return "".join(parts)


def tasks_table(story: RunStory) -> str:
    counts = Counter(t.outcome for t in story.tasks)
    folded = len(story.tasks) > OPEN_STORIES
    has_target = any(t.target for t in story.tasks)
    rows = []
    for n, s in enumerate(story.tasks, 1):
        t = s.task
        state = t.state.value
        # The local state adds something only while a task is still in flight.
        where = "" if state == s.outcome else f' <span class="sub">{esc(state)}</span>'
        target = f'<div class="sub">target {esc(s.target)}</div>' if s.target else ""
        status = f'<div class="sub"><code>{esc(t.last_status)}</code></div>' if t.last_status else ""
        reason = f'<div class="why">{esc(t.reason)}</div>' if t.reason else ""
        rows.append(
            f'<tr class="o-{esc(s.outcome)}" style="--p:{s.index}"><td class="idx">{n}</td>'
            f'<td>{esc(t.name or "")}<div class="sub"><code>{esc(t.job_id)}</code></div>'
            f'<div class="sub">{esc(_kind(t))} · plan {esc(t.planned_action)}</div>{target}</td>'
            f"<td>{badge(s.outcome)}{where}{status}</td>"
            f"<td>{_codes_cell(s)}</td><td>{reason}{_story_cell(s, story.start, folded)}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("#", "Task", "Outcome · last remote status", "Errors",
                                               "Reason · what happened"))
    note = ('<p class="note">Every task of the run. <b>recovered</b>: an error the task got past — a busy '
            "answer retried, a dropped connection whose outcome was read back — before it ended well. "
            "<b>escalated</b>: after plain terminates left the task in RELEASE_RESOURCE_FAILED, "
            "force_terminate was sent. Times are from the run's start.</p>")
    table = (f'{_controls(counts)}<table class="tasks{" targets" if has_target else ""}"><thead><tr>{head}'
             f"</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")
    return card("Tasks", f"{note}\n{table}", small=f"{len(story.tasks):,}, problems first", anchor="tasks")


def targets_table(story: RunStory) -> str:
    """Per-target counts by outcome (issue 15); nothing when the tasks carry no target."""
    targets = story.targets
    if not targets:
        return ""
    present = [o for o in OUTCOMES if any(c[o] for c in targets.values())]
    rows = [(label, *(c[o] for o in present), sum(c.values())) for label, c in sorted(targets.items())]
    return card("Targets", mini_table(("Target", *present, "total"), rows, cls="mini wide"),
                small=plural(len(targets), "target"))


# -- HTTP -----------------------------------------------------------------------------------------------------


def _error_chart(calls: Sequence[ApiCall], records: Sequence[AuditRecord]) -> str:
    """Error codes by exchange (whole calls) and by task answer (per item, e.g. DRS.M01504 inside a 202)."""
    per_call = Counter(c.error_code for c in calls if c.error_code)
    per_task = Counter(r.error_code for r in records if r.job_id is not None and r.error_code)
    clean = sum(1 for c in calls if not c.error_code)
    codes = sorted(set(per_call) | set(per_task), key=lambda k: (-(per_call[k] + per_task[k]), k))
    top = max([per_call[k] + per_task[k] for k in codes] + [clean, 1])
    rows = []
    for code in codes:
        a, b = per_call[code], per_task[code]
        tip = CODE_MEANINGS.get(code, "")
        rows.append(f'<div class="hrow" title="{esc(tip)}"><code>{esc(code)}</code><span class="hbar">'
                    f'<i style="width:{100 * a / top:.2f}%;background:#dc2626"></i>'
                    f'<i style="width:{100 * b / top:.2f}%;background:#f97316"></i></span>'
                    f"<b>{a:,} · {b:,}</b></div>")
    rows.append(f'<div class="hrow"><code>none</code><span class="hbar"><i style="width:{100 * clean / top:.2f}%;'
                f'background:#94a3b8"></i></span><b>{clean:,}</b></div>')
    key = ('<p class="note"><i class="sw" style="background:#dc2626"></i>exchanges that failed as a whole '
           '(HTTP status or transport) · <i class="sw" style="background:#f97316"></i>task records carrying the '
           "code (per-item answers inside a 2xx, and what a failed call meant for each task). "
           "<code>none</code>: exchanges without an error code.</p>")
    return '<div class="hist">' + "".join(rows) + "</div>" + key


def http_card(calls: Sequence[ApiCall], records: Sequence[AuditRecord]) -> str:
    if not calls:
        inner = '<p class="note">No HTTP exchange was recorded for this run.</p>'
        if any(r.error_code for r in records):
            inner += f"<h3>Error codes</h3>{_error_chart(calls, records)}"
        return card("HTTP exchanges", inner, small="0")
    by_api = Counter((c.api, c.method) for c in calls)
    statuses = Counter("no response" if c.http_status is None else str(c.http_status) for c in calls)
    durations = sorted(c.duration_ms for c in calls)
    p95 = durations[min(len(durations) - 1, int(0.95 * len(durations)))]
    throttled = sum(c.http_status == 429 or c.error_code in ("APIGW.0308", "DRS.M01503") for c in calls)
    stats = [("Exchanges", f"{len(calls):,}"),
             ("Retries (attempt > 1)", f"{sum(c.attempt > 1 for c in calls):,}"),
             ("Throttled", f"{throttled:,}"),
             ("Server errors (5xx)", f"{sum((c.http_status or 0) >= 500 for c in calls):,}"),
             ("No response", f"{sum(c.http_status is None for c in calls):,}"),
             ("Median duration", f"{statistics.median(durations):.1f} ms"),
             ("95th percentile", f"{p95:.1f} ms"),
             ("Slowest", f"{durations[-1]:.1f} ms")]
    dl = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in stats) + "</dl>"
    api_table = mini_table(("API", "Method", "Calls"), [(*k, n) for k, n in sorted(by_api.items())])
    inner = (
        f'<div class="grid3">\n<div>{dl}</div>\n'
        f"<div><h3>By API</h3>{api_table}"
        f"<h3>By HTTP status</h3>{mini_table(('Status', 'Calls'), sorted(statuses.items()))}</div>\n"
        f"<div><h3>Error codes</h3>{_error_chart(calls, records)}</div>\n</div>\n"
        '<p class="note">Recorded per exchange: method, path, status, request id, duration, task ids and '
        "error code; never a header value, token or body.</p>"
    )
    return card("HTTP exchanges", inner, small=f"{len(calls):,}")


# -- the trail ------------------------------------------------------------------------------------------------

_EVENT_NAMES = {"run_started": "started", "run_interrupted": "interrupted", "run_resumed": "resumed",
                "run_finished": "finished"}


def trail_card(story: RunStory, records: Sequence[AuditRecord]) -> str:
    triggers = sorted(story.triggers.items(), key=lambda kv: (-kv[1], kv[0]))
    by_trigger = ", ".join(f"{k} {n:,}" for k, n in triggers)
    legend_rows = [(k, n, TRIGGER_MEANINGS.get(k, "")) for k, n in triggers]
    events = []
    for e in story.events:
        name = _EVENT_NAMES.get(e.trigger, e.trigger)
        cls = f' class="ev-{esc(e.trigger)}"'
        events.append(f"<tr{cls}><td class=\"num\">{e.seq:,}</td><td>{esc(when(e.at))}<div class=\"sub\">"
                      f"{esc(offset(e.at, story.start))}</div></td><td><b>{esc(name)}</b></td>"
                      f"<td>{esc(e.who)}<div class=\"sub\"><code>{esc(e.worker)}</code></div></td>"
                      f"<td>{esc(e.outcome)}</td><td>{esc(e.detail)}</td><td><code>{esc(e.hash[:16])}…</code></td>"
                      "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("Seq", "At", "Event", "Who", "Outcome", "Detail", "Hash"))
    gaps = "".join(f"<li>interrupted for <b>{esc(duration(g.seconds))}</b>: {esc(when(g.start))} → "
                   f"{esc(when(g.end))}" + (f", resumed by {esc(g.resumed_by)}" if g.resumed_by else
                                             " (no resume record: the next record after the interruption)")
                   + "</li>" for g in story.gaps)
    inner = (
        f'<p class="note">Task records by trigger: {esc(by_trigger or "none")}. The whole trail: '
        "<code>drs-teardown audit RUN_ID --format csv</code> (or json).</p>\n"
        "<h3>What the trigger counts mean</h3>"
        '<p class="note">One record per transition. <code>stop</code> and <code>delete</code> are intents, '
        "written before each request is sent, so they count attempts (a busy task that is requeued and tried "
        "again counts twice); <code>stop_accepted</code>, <code>released</code> and <code>deleted</code> count "
        f"what the service confirmed. Here \"delete {story.triggers.get('delete', 0):,}, deleted "
        f"{story.triggers.get('deleted', 0):,}\": {plural(story.triggers.get('delete', 0), 'delete')} sent, "
        f"{story.triggers.get('deleted', 0):,} confirmed.</p>"
        + mini_table(("Trigger", "Records", "Meaning"), legend_rows, cls="mini wide legend-table")
        + "<h3>Run events</h3>"
        + (f'<ul class="gaps">{gaps}</ul>' if gaps else "")
        + f'<table class="mini wide events"><thead><tr>{head}</tr></thead><tbody>{"".join(events)}</tbody></table>'
    )
    return card("Audit trail", inner, small=f"{len(records):,} records")
