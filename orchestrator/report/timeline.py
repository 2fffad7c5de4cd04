"""The timeline as inline SVG: one lane per task when they fit, else a histogram of tasks by state over time.

Either way every task is counted and the gaps (interrupted, nobody working) are drawn as hatched bands that
no bar crosses.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.lifecycle import OUTCOMES
from orchestrator.report.formatting import clip, duration, esc, when
from orchestrator.report.story import TERMINAL_VALUES, Gap, RunStory, TaskStory, cut

TIMELINE_MAX_ROWS = 150  # beyond this many tasks, the histogram
HISTOGRAM_BINS = 160
STATE_COLORS: dict[str, str] = {
    "pending": "#cbd5e1", "stopping": "#f59e0b", "releasing": "#3b82f6", "deletable": "#8b5cf6",
    "deleting": "#ec4899",
}
OUTCOME_COLORS: dict[str, str] = {
    "deleted": "#16a34a", "skipped": "#64748b", "blocked": "#ea580c", "failed": "#dc2626",
    "timed_out": "#991b1b", "pending": "#7c3aed",
}
GAP_FILL = "url(#gap)"
_WIDTH, _LABEL_W, _RIGHT = 1100, 250, 24


@dataclass(frozen=True)
class Segment:
    """A task in one local state from `start` to `end`."""

    state: str
    start: datetime
    end: datetime
    trigger: str


def segments_of(story: TaskStory, end: datetime) -> list[Segment]:
    """A task's local states over time from its records (repeats merged), until it ended or the trail did."""
    out: list[Segment] = []
    current = None
    for r in story.records:
        if not r.to_state:
            continue
        if current is not None and current.to_state != r.to_state:
            out.append(Segment(str(current.to_state), current.at, r.at, current.trigger))
        if current is None or current.to_state != r.to_state:
            current = r
        if r.to_state in TERMINAL_VALUES:
            return out
    if current is not None:
        out.append(Segment(str(current.to_state), current.at, end, current.trigger))
    return out


_TICK_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300,
               600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def ticks(span: float, target: int = 8) -> tuple[float, list[float]]:
    """A round step giving at most `target` intervals over `span` seconds, and the ticks from 0."""
    step = next((s for s in _TICK_STEPS if span / s <= target), span / target)
    return step, [i * step for i in range(int(span / step + 1e-9) + 1)]


def tick_label(t: float, step: float, *, clock: bool = False) -> str:
    """A tick's label; `clock`: past a minute, as m:ss (a broken axis mixes seconds and minutes)."""
    if clock and step < 60 and t >= 60:
        minutes, secs = divmod(round(t), 60)
        return f"{minutes}:{secs:02d}"
    if step < 60:
        return f"{round(t, 3):g} s"
    if step < 3600:
        minutes, secs = divmod(round(t), 60)
        return f"{minutes}:{secs:02d}" if secs else f"{minutes} min"
    if step < 86400:
        hours, rest = divmod(round(t), 3600)
        return f"{hours}:{rest // 60:02d} h" if rest else f"{hours} h"
    return f"{t / 86400:g} d"


def legend(*, histogram: bool) -> str:
    items = [f'<span><i style="background:{c}"></i>{esc(s)}</span>' for s, c in STATE_COLORS.items()]
    shape = "" if histogram else ' class="dia"'
    items += [f'<span><i{shape} style="background:{OUTCOME_COLORS[o]}"></i>{esc(o)}</span>'
              for o in OUTCOMES if o != "pending"]
    items.append('<span><i class="gap"></i>interrupted (nobody working)</span>')
    how = ("columns: how many tasks were in each state at that time" if histogram
           else "bars: local state · diamonds: final outcome")
    items.append(f'<span class="muted">{how}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def timeline_svg(story: RunStory, *, max_rows: int = TIMELINE_MAX_ROWS) -> str:
    """The timeline of a run: lanes for up to `max_rows` tasks, a histogram of all of them beyond."""
    if len(story.tasks) > max_rows:
        return _histogram_svg(story)
    return _lanes_svg(story)


class _Axis:
    """Time to x. A gap longer than a tenth of the run is drawn narrow (a broken axis), so the work stays legible."""

    GAP_SHARE = 0.06  # of the plot's width, per long gap

    def __init__(self, start: datetime, end: datetime, left: float, width: float,
                 gaps: Sequence[Gap] = ()) -> None:
        self.start, self.left, self.width = start, left, width
        self.span = (end - start).total_seconds()
        secs = sorted((max((g.start - start).total_seconds(), 0.0), min((g.end - start).total_seconds(), self.span))
                      for g in gaps)
        self.long = [(a, b) for a, b in secs if b - a > 0.1 * self.span]
        gap_w = min(self.GAP_SHARE, 0.3 / len(self.long)) * width if self.long else 0.0
        active = self.span - sum(b - a for a, b in self.long)
        per_second = (width - gap_w * len(self.long)) / active if active > 0 else 0.0
        self.knots: list[tuple[float, float]] = [(0.0, left)]
        for a, b in self.long:
            t, x = self.knots[-1]
            self.knots += [(a, x + (a - t) * per_second), (b, x + (a - t) * per_second + gap_w)]
        t, x = self.knots[-1]
        self.knots.append((self.span, x + (self.span - t) * per_second))
        self.active = active

    def at(self, t: float) -> float:
        """x of `t` seconds after the start."""
        t = min(max(t, 0.0), self.span)
        i = max(bisect.bisect_right([k[0] for k in self.knots], t) - 1, 0)
        if i >= len(self.knots) - 1:
            return self.knots[-1][1]
        (t0, x0), (t1, x1) = self.knots[i], self.knots[i + 1]
        return x0 if t1 == t0 else x0 + (x1 - x0) * (t - t0) / (t1 - t0)

    def seconds(self, x: float) -> float:
        """The time drawn at x (the inverse of `at`)."""
        for (t0, x0), (t1, x1) in itertools.pairwise(self.knots):
            if x <= x1 or (t1, x1) == self.knots[-1]:
                return t0 if x1 == x0 else t0 + (t1 - t0) * (x - x0) / (x1 - x0)
        return self.span

    def x(self, at: datetime) -> float:
        return self.at((at - self.start).total_seconds())

    def svg(self, top: float, bottom: float) -> list[str]:
        step, marks = ticks(self.active if self.long else self.span)
        if self.long:
            pieces, t0 = [], 0.0
            for a, b in self.long:
                pieces.append((t0, a))
                t0 = b
            pieces.append((t0, self.span))
            marks = [k * step for a, b in pieces for k in range(math.ceil(a / step - 1e-9), int(b / step + 1e-9) + 1)]
        out = []
        for tick in marks:
            tx, label = self.at(tick), esc(tick_label(tick, step, clock=bool(self.long)))
            out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="#e2e8f0"/>')
            for ty in (top - 8, bottom + 14):
                out.append(f'<text x="{tx:.1f}" y="{ty}" text-anchor="middle" fill="#64748b">{label}</text>')
        return out


def _open(height: float, label: str) -> list[str]:
    return [f'<svg class="timeline" viewBox="0 0 {_WIDTH} {height:.0f}" width="{_WIDTH}" height="{height:.0f}" '
            f'role="img" aria-label="{esc(label)}" font-size="11">',
            '<defs><pattern id="gap" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f1f5f9"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#94a3b8" stroke-width="2"/></pattern></defs>']


def _gaps_svg(gaps: Sequence[Gap], axis: _Axis, top: float, bottom: float) -> list[str]:
    out = []
    for g in gaps:
        x0, x1 = axis.x(g.start), axis.x(g.end)
        who = f"; resumed by {g.resumed_by}" if g.resumed_by else ""
        tip = f"interrupted for {duration(g.seconds)}, {when(g.start)} to {when(g.end)}{who}"
        out.append(f'<rect class="gap" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 3.0):.1f}" '
                   f'height="{bottom - top:.1f}" fill="{GAP_FILL}" opacity="0.9"><title>{esc(tip)}</title></rect>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{top + 12}" text-anchor="middle" fill="#475569" '
                   f'font-weight="600">interrupted {esc(duration(g.seconds))}</text>')
    return out


def _lanes_svg(story: RunStory) -> str:
    lanes = story.tasks
    row_h = 18 if len(lanes) <= 60 else 12
    bar_h, top = row_h - 6, 26
    axis = _Axis(story.start, story.end, _LABEL_W, _WIDTH - _LABEL_W - _RIGHT, story.gaps)
    bottom = top + row_h * max(len(lanes), 1)
    out = _open(bottom + 24, "Timeline of each task's local state")
    out += [f'<rect x="0" y="{top + i * row_h}" width="{_WIDTH}" height="{row_h}" fill="#f8fafc"/>'
            for i in range(0, len(lanes), 2)]
    out += axis.svg(top, bottom)
    for i, lane in enumerate(lanes):
        out += _lane_svg(lane, segments_of(lane, story.end), story.gaps, top + i * row_h, row_h, bar_h, axis.x)
    if not lanes:
        out.append(f'<text x="{_LABEL_W + 8}" y="{top + 13}" fill="#64748b">no tasks</text>')
    out += _gaps_svg(story.gaps, axis, top, bottom)
    out.append(f'<line x1="{_LABEL_W}" y1="{top}" x2="{_LABEL_W}" y2="{bottom}" stroke="#94a3b8"/>')
    out.append("</svg>")
    return "\n".join(out)


def _lane_svg(lane: TaskStory, segments: Sequence[Segment], gaps: Sequence[Gap], y: int, row_h: int, bar_h: int,
              x: Callable[[datetime], float]) -> list[str]:
    t = lane.task
    who = t.name or t.job_id
    label = clip(who, 30) + (f"  {t.job_id[:8]}" if t.name else "")
    out = [f'<text x="{_LABEL_W - 10}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#334155">'
           f"<title>{esc(t.job_id)} {esc(t.name or '')}</title>{esc(label)}</text>"]
    for seg in segments:
        tip = esc(f"{who}: {seg.state} for {duration((seg.end - seg.start).total_seconds())} "
                  f"from {when(seg.start)} ({seg.trigger})")
        for start, end in cut(seg.start, seg.end, gaps):
            x0, x1 = x(start), x(end)
            if x1 - x0 < 2.0:  # an instant still shows, 2 px wide, but never across a gap it ended at
                x1 = x0 + 2.0
                for g in gaps:
                    if x0 <= x(g.start) < x1:
                        x0, x1 = x(g.start) - 2.0, x(g.start)
            w = x1 - x0
            out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{bar_h}" rx="2" '
                       f'fill="{STATE_COLORS.get(seg.state, "#94a3b8")}"><title>{tip}</title></rect>')
    if lane.ended_at is not None:
        cx, cy, r = x(lane.ended_at), y + row_h / 2, bar_h / 2 + 1
        tip = f"{who}: {lane.outcome} at {when(lane.ended_at)}"
        out.append(f'<path d="M{cx:.1f} {cy - r:.1f} L{cx + r:.1f} {cy:.1f} L{cx:.1f} {cy + r:.1f} '
                   f'L{cx - r:.1f} {cy:.1f} Z" fill="{OUTCOME_COLORS.get(lane.outcome, "#64748b")}" '
                   f'stroke="#fff"><title>{esc(tip)}</title></path>')
    return out


# Stacked bottom to top: settled outcomes first (they only grow), then the active states.
_STACK: tuple[tuple[str, str], ...] = (
    *((o, OUTCOME_COLORS[o]) for o in ("deleted", "skipped", "blocked", "failed", "timed_out")),
    *((s, STATE_COLORS[s]) for s in ("deleting", "deletable", "releasing", "stopping", "pending")),
)


def state_counts(story: RunStory, samples: Sequence[datetime]) -> dict[str, list[int]]:
    """How many tasks were in each state (or settled outcome) at each sample time; each task counted once."""
    diff: dict[str, list[int]] = {key: [0] * (len(samples) + 1) for key, _ in _STACK}
    for lane in story.tasks:
        for seg in segments_of(lane, story.end):
            if seg.state in diff:
                diff[seg.state][bisect.bisect_left(samples, seg.start)] += 1
                diff[seg.state][bisect.bisect_left(samples, seg.end)] -= 1
        if lane.ended_at is not None and lane.outcome in diff:
            diff[lane.outcome][bisect.bisect_left(samples, lane.ended_at)] += 1
    counts = {}
    for key, d in diff.items():
        running, out = 0, []
        for v in d[:-1]:
            running += v
            out.append(running)
        counts[key] = out
    return counts


def _histogram_svg(story: RunStory) -> str:
    n = len(story.tasks)
    top, plot_h = 26, 260
    axis = _Axis(story.start, story.end, 70, _WIDTH - 70 - _RIGHT, story.gaps)
    col_w = axis.width / HISTOGRAM_BINS
    edges = [axis.seconds(axis.left + i * col_w) for i in range(HISTOGRAM_BINS + 1)]
    samples = [story.start + timedelta(seconds=axis.seconds(axis.left + (i + 0.5) * col_w))
               for i in range(HISTOGRAM_BINS)]
    counts = state_counts(story, samples)
    bottom = top + plot_h
    out = _open(bottom + 24, f"Tasks by state over time, all {n:,} tasks")
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = bottom - plot_h * frac
        out.append(f'<line x1="{axis.left}" y1="{y:.1f}" x2="{axis.left + axis.width}" y2="{y:.1f}" '
                   'stroke="#e2e8f0"/>')
        out.append(f'<text x="{axis.left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#64748b">'
                   f"{round(n * frac):,}</text>")
    out += axis.svg(top, bottom)
    for i, at in enumerate(samples):
        if any(g.start <= at < g.end for g in story.gaps):
            continue  # nobody working: no column across a gap
        y = float(bottom)
        x0 = axis.left + i * col_w
        tip = [f"t+{duration(edges[i])}–{duration(edges[i + 1])}"]
        for key, colour in _STACK:
            v = counts[key][i]
            if not v:
                continue
            h = plot_h * v / n
            y -= h
            out.append(f'<rect x="{x0:.2f}" y="{y:.2f}" width="{col_w + 0.3:.2f}" height="{h:.2f}" '
                       f'fill="{colour}"/>')
            tip.append(f"{key} {v:,}")
        out.append(f'<rect x="{x0:.2f}" y="{top}" width="{col_w:.2f}" height="{plot_h}" fill="transparent">'
                   f"<title>{esc(', '.join(tip))}</title></rect>")
    out += _gaps_svg(story.gaps, axis, top, bottom)
    out.append(f'<line x1="{axis.left}" y1="{top}" x2="{axis.left}" y2="{bottom}" stroke="#94a3b8"/>')
    out.append("</svg>")
    return "\n".join(out)
