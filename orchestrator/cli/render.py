"""Rendering for people on stderr (rich): plan, outcome and run tables, and the progress of a run.

Tables put problems first (block, failed, timed out) and always end with the counts. Progress works in any
log: without a terminal, one plain line at least every `interval` seconds (also when nothing changed) and at
each change of the counts (at most one every `min_gap` seconds); in a terminal, a live panel cut to its width.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.clock import Clock, RealClock
from orchestrator.lifecycle import OUTCOME_ORDER, TERMINAL
from orchestrator.planning import Plan
from orchestrator.snapshot import AFTER_CHILDREN, Snapshot, WaitGroup

OUTCOME_STYLE = {"deleted": "green", "skipped": "cyan", "blocked": "yellow", "failed": "red",
                 "timed_out": "red", "pending": "magenta"}
ROW_LIMIT = 60
# Problems first: what needs an operator, then what is in doubt, then the routine.
ACTION_ORDER: tuple[str, ...] = ("block", "wait", "unsubscribe_then_delete", "stop_then_delete", "delete", "skip")
_OUTCOME_RANK = {o: i for i, o in enumerate(OUTCOME_ORDER)}
_ACTION_RANK = {a: i for i, a in enumerate(ACTION_ORDER)}
PROBLEM_ACTIONS = frozenset({"block"})
PROBLEM_OUTCOMES = frozenset({"failed", "timed_out", "blocked", "pending"})
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)
QUIET_ACTIONS = frozenset({"poll", "wait", "read"})
SETTLED_WELL = frozenset({"deleted", "skipped"})  # progress; blocked/failed/timed_out are not


def counts_line(counts: Mapping[str, int]) -> Text:
    text = Text()
    for i, (k, v) in enumerate(counts.items()):
        if i:
            text.append("  ")
        text.append(f"{k} {v}", style=OUTCOME_STYLE.get(k, ""))
    return text


def _ranked_counts(values: Iterable[str], rank: Mapping[str, int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _caption(counts: Mapping[str, int]) -> str:
    return " · ".join(f"{k} {v}" for k, v in counts.items()) + f" = {sum(counts.values())}"


def _limited(rows: Sequence[Any], is_problem: Any, limit: int) -> tuple[list[Any], int]:
    """Every problem row, then the others up to `limit` rows in all; and how many were left out."""
    problems = [r for r in rows if is_problem(r)]
    rest = [r for r in rows if not is_problem(r)]
    shown = problems + rest[: max(limit - len(problems), 0)]
    return shown, len(rows) - len(shown)


def plan_table(plan: Plan, *, limit: int = ROW_LIMIT) -> Table:
    """The plan, `block` rows first and all of them; the counts by action at the end."""
    items = sorted(plan.items, key=lambda it: (_ACTION_RANK.get(it.action.value, len(_ACTION_RANK)), it.job_id))
    shown, hidden = _limited(items, lambda it: it.action.value in PROBLEM_ACTIONS, limit)
    counts = _ranked_counts((it.action.value for it in plan.items), _ACTION_RANK)
    caption = f"by action: {_caption(counts)}"
    table = Table(title=f"Plan for project {plan.project_id}: {len(plan.items)} task(s)", title_justify="left",
                  caption=caption, caption_justify="left", min_width=len(caption))
    table.add_column("job id", no_wrap=True, min_width=36)
    for col in ("name", "status", "action", "why"):
        table.add_column(col, overflow="fold")
    for item in shown:
        style = "yellow" if item.action.value in PROBLEM_ACTIONS else ""
        table.add_row(item.job_id, item.name or "", item.status or "", Text(item.action.value, style=style),
                      item.reason)
    if hidden:
        table.add_row("…", f"{hidden} more (use --output json for all)", "", "", "")
    return table


def summary_table(jobs: list[dict[str, Any]], *, limit: int = ROW_LIMIT) -> Table:
    """Tasks that need attention first (all of them); deleted/skipped after, up to `limit` rows; counts last."""
    rows = sorted(jobs, key=lambda j: (_OUTCOME_RANK.get(j["outcome"], len(_OUTCOME_RANK)), j["job_id"]))
    shown, hidden = _limited(rows, lambda j: j["outcome"] in PROBLEM_OUTCOMES, limit)
    counts = _ranked_counts((j["outcome"] for j in jobs), _OUTCOME_RANK)
    caption = f"by outcome: {_caption(counts)}" if jobs else None
    table = Table(title="Outcome", title_justify="left", caption=caption, caption_justify="left",
                  min_width=len(caption or ""))
    table.add_column("job id", no_wrap=True, min_width=36)
    for col in ("name", "outcome", "remote status", "reason"):
        table.add_column(col, overflow="fold")
    for j in shown:
        table.add_row(j["job_id"], j.get("name") or "", Text(j["outcome"], style=OUTCOME_STYLE.get(j["outcome"], "")),
                      j.get("remote_status") or "", _reason(j))
    if hidden:
        table.add_row("…", f"{hidden} more (use --output json for all)", "", "", "")
    return table


def _reason(job: dict[str, Any]) -> str:
    """The task's reason, and where its replication stopped when --record-breakpoint read it."""
    bp = job.get("breakpoint") or {}
    where = ", ".join(f"{k} {v}" for k, v in (("gtid", bp.get("gtid")), ("position", bp.get("incre_start_position")))
                      if v)
    return "\n".join(p for p in (job.get("reason") or "", f"replication stopped at {where}" if where else "") if p)


def _run_rank(r: Any) -> int:
    """Failed runs first, then incomplete, interrupted, running; finished clean last."""
    if r.status == "failed" or r.exit_code in (1, 2, 4):
        return 0
    if r.exit_code == 3:
        return 1
    if r.status == "interrupted" or r.exit_code == 130:
        return 2
    if r.status == "running":
        return 3
    return 4


def runs_table(runs: Iterable[Any]) -> Table:
    """Runs with problems first (newest first within each kind); the counts by status at the end."""
    ordered = sorted(runs, key=lambda r: r.created_at, reverse=True)
    ordered.sort(key=_run_rank)
    counts: dict[str, int] = {}
    for r in ordered:
        key = r.status if r.exit_code is None else f"{r.status} (exit {r.exit_code})"
        counts[key] = counts.get(key, 0) + 1
    caption = f"by status: {_caption(counts)}" if ordered else None
    table = Table(title="Runs", title_justify="left", caption=caption, caption_justify="left",
                  min_width=len(caption or ""))
    for col in ("run id", "created (UTC)", "status", "exit", "project", "ticket", "consent"):
        table.add_column(col)
    for r in ordered:
        style = "red" if _run_rank(r) == 0 else "yellow" if _run_rank(r) < 4 else ""
        table.add_row(r.id, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), Text(r.status, style=style),
                      "" if r.exit_code is None else str(r.exit_code), r.project_id, r.ticket or "", r.consent)
    return table


# -- progress -------------------------------------------------------------------------------------------------


def _secs(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def group_text(g: WaitGroup) -> str:
    """ "3 releasing (RELEASE_RESOURCE_STARTED 2, RELEASE_RESOURCE_FAILED 1), force_terminate next for 1": what the
    service says of the group's tasks, and the actions due next (polling goes without saying); a parent waiting
    for its re-edit children says so ("1 after its re-edit children") rather than naming a stop it will not send
    yet."""
    text = f"{g.count} {g.state}"
    remote = sorted(g.remote.items(), key=lambda kv: (-kv[1], kv[0]))
    if remote:
        text += " (" + ", ".join(f"{s} {n}" for s, n in remote[:3]) + (", …" if len(remote) > 3 else "") + ")"
    # Polling is what a waiting group does anyway; name only the actions that change something.
    nexts = [(a, n) for a, n in sorted(g.next_actions.items(), key=lambda kv: (-kv[1], kv[0]))
             if n and a not in QUIET_ACTIONS]
    if nexts:
        text += ", " + ", ".join(f"{n} after its re-edit children" if a == AFTER_CHILDREN else f"{a} next for {n}"
                                 for a, n in nexts)
    return text


class Eta:
    """When the run will be done, once there is data to say: tasks that settled well (deleted or skipped) during
    the run, at least `min_done` of them, and one observed release; blocked, failed and timed-out tasks are never
    progress. Two bounds, the larger wins: the pace so far (the settled-well count over the time since the run
    started), and what is left to wait out, from the release times observed in this run: a task still to be
    stopped waits a typical (median) release; the most recently stopped one waits the median of the releases
    that took longer than it has waited so far. When that task is already slower than every release seen, only
    the pace is left, and at the tail of a run (the pace says less than it has waited) no guess ("ETA —")."""

    def __init__(self, min_done: int = 3) -> None:
        self.min_done = min_done
        self._baseline: int | None = None  # settled well before this process saw the run (plan, earlier workers)

    def __call__(self, snap: Snapshot) -> float | None:
        well = sum(n for s, n in snap.counts.items() if s in SETTLED_WELL)
        if self._baseline is None:
            self._baseline = well
        done = well - self._baseline
        active = sum(n for s, n in snap.counts.items() if s not in TERMINAL_STATES)
        elapsed = (snap.now - snap.started).total_seconds()
        if snap.planning:  # the plan is still being read: more tasks may come
            return None
        if active == 0:
            return 0.0
        if done < self.min_done or elapsed <= 0 or not (snap.release_seconds or snap.released):
            return None
        pace = active * elapsed / done
        left = self.left_to_wait(snap)
        if left is None:
            # The most recently stopped task is slower than every release seen. While much is left (a wave of
            # stops still releasing) the pace speaks; at the tail there is nothing to base a guess on.
            return pace if snap.youngest_wait is not None and pace >= snap.youngest_wait else None
        return max(pace, left)

    @staticmethod
    def left_to_wait(snap: Snapshot) -> float | None:
        """The release still to wait out, from the observed release times (None: slower than all of them)."""
        samples = sorted(snap.release_seconds)
        if not samples:
            return 0.0
        if snap.unstarted is None:  # the engine did not say what waits: the last tasks wait out about half one
            return statistics.median(samples) / 2
        left = statistics.median(samples) if snap.unstarted else 0.0
        if snap.youngest_wait is not None:
            longer = [r for r in samples if r > snap.youngest_wait]
            if not longer:
                return None
            left = max(left, statistics.median(longer) - snap.youngest_wait)
        return left

    @staticmethod
    def text(eta: float | None, active: int) -> str:
        if eta is None:
            return "ETA —"
        if active == 0:
            return "done"
        return f"ETA ~{_secs(max(eta, 1.0))}"


def _as_snapshot(snap: Any) -> Snapshot:
    """The engine's progress as an orchestrator.snapshot.Snapshot (an older engine's value is converted)."""
    if isinstance(snap, Snapshot):
        return snap
    return Snapshot(now=snap.now, started=snap.started, total=snap.total, counts=dict(snap.counts),
                    calls=getattr(snap, "calls", 0))


class _LiveView:
    """What the Live draws: the latest snapshot, rendered afresh at each refresh so the time moves on."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich__(self) -> Group | Text:
        snap = self.progress.snapshot
        return Text("starting…") if snap is None else self.progress.panel(snap)


class Progress:
    """The progress of a run on a console: live in a terminal, plain lines elsewhere (CI logs, files).

    `interval`: a status line at least this often without a terminal, also when nothing changed (`--progress-
    interval`); `min_gap`: at most one line this often for changes; `clock`: the time base (tests: FakeClock).
    """

    def __init__(self, console: Console, *, live: bool, interval: float = 10.0, clock: Clock | None = None,
                 min_gap: float = 2.0) -> None:
        self.console = console
        self.interval = interval
        self.min_gap = min(min_gap, interval)
        self.clock: Clock = clock or RealClock()
        self.live = Live(_LiveView(self), console=console, refresh_per_second=4, transient=False) if live else None
        self.eta = Eta()
        self.snapshot: Snapshot | None = None
        self._last_line: float | None = None  # monotonic time of the last line printed
        self._last_counts: dict[str, int] | None = None
        self._beat: asyncio.Task[None] | None = None
        self.lines = 0

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.__enter__()
        with contextlib.suppress(RuntimeError):  # no running loop: lines only when the engine reports
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self.live is not None:
            self.live.__exit__(None, None, None)
        elif self.snapshot is not None and self._last_counts != dict(self.snapshot.counts):
            self._print(self.snapshot)  # the end state is always in the log

    def __call__(self, snap: Snapshot) -> None:
        """A new snapshot from the engine."""
        snap = _as_snapshot(snap)
        self.snapshot = snap
        eta = self.eta(snap)
        if self.live is not None:
            self.live.refresh()  # the view reads the snapshot (and the clock) at every refresh
            return
        now = self.clock.monotonic()
        changed = self._last_counts != dict(snap.counts)
        if self._last_line is None or (changed and now - self._last_line >= self.min_gap) \
                or now - self._last_line >= self.interval:
            self._print(snap, eta)

    def tick(self) -> None:
        """Print the status line again if `interval` passed since the last one (the heartbeat calls this)."""
        if self.live is not None or self.snapshot is None:
            return
        if self._last_line is None or self.clock.monotonic() - self._last_line >= self.interval:
            self._print(self.snapshot)

    async def _heartbeat(self) -> None:
        # Real-time wake-ups, decisions on `clock`: a FakeClock in tests is never advanced from here.
        while True:
            await asyncio.sleep(min(self.interval, 1.0))
            self.tick()

    def _print(self, snap: Snapshot, eta: float | None = None) -> None:
        self._last_line = self.clock.monotonic()
        self._last_counts = dict(snap.counts)
        self.lines += 1
        # One physical line per status, however wide: a log wraps it, rich must not.
        self.console.print(self.line(snap, eta), highlight=False, markup=False, soft_wrap=True)

    def _elapsed(self, snap: Snapshot) -> float:
        """Seconds since the run started, up to now (a repeated line shows time moving on)."""
        return max((snap.now - snap.started).total_seconds(), (self.clock.now() - snap.started).total_seconds())

    @staticmethod
    def _states(snap: Snapshot) -> str:
        active = [(s, n) for s, n in snap.counts.items() if s not in TERMINAL_STATES and n]
        settled = sorted(((s, n) for s, n in snap.counts.items() if s in TERMINAL_STATES and n),
                         key=lambda kv: _OUTCOME_RANK.get(kv[0], 9))
        return ", ".join(f"{s} {n}" for s, n in active + settled)

    def _parts(self, snap: Snapshot, eta: float | None) -> list[str]:
        settled = sum(n for s, n in snap.counts.items() if s in TERMINAL_STATES)
        active = snap.total - settled
        planning = "planning · " if snap.planning else ""
        head = f"[{_secs(self._elapsed(snap)):>6}] {planning}{settled}/{snap.total} settled"
        parts = [head, self._states(snap) or "no tasks"]
        waits = [group_text(g) for g in snap.groups if g.count]
        if waits:
            parts.append("; ".join(waits))
        parts.append(f"calls {snap.calls}, retries {snap.retries}, throttled {snap.throttled}, errors {snap.errors}")
        if snap.targets:
            parts.append("targets " + ", ".join(
                f"{label} {sum(n for s, n in c.items() if s in TERMINAL_STATES)}/{sum(c.values())}"
                for label, c in snap.targets.items()))
        parts.append(Eta.text(eta if eta is not None else self.eta(snap), active))
        return parts

    def line(self, snap: Snapshot, eta: float | None = None) -> str:
        """The status line without a terminal."""
        return " · ".join(self._parts(snap, eta))

    def panel(self, snap: Snapshot, eta: float | None = None) -> Group:
        """The live view: a bar with the counts and ETA, then a line for the states, one for each waiting group
        and one for the calls, cut to the width (the bar shrinks first, then lines end in an ellipsis: nothing
        wraps, and a long group does not hide the next one)."""
        settled = sum(n for s, n in snap.counts.items() if s in TERMINAL_STATES)
        parts = self._parts(snap, eta)
        head = f"{parts[0].strip()}  {parts[-1]}"
        width = min(30, self.console.width - len(head) - 1)  # the words first; the bar takes what is left
        if width >= 8:
            filled = int(width * settled / snap.total) if snap.total else width
            head = f"{'█' * filled}{'░' * (width - filled)} {head}"
        rows = [Text(head)]
        waits = [group_text(g) for g in snap.groups if g.count]
        middle = parts[1:-1]
        if waits:  # the line of waits (parts[2]) becomes a line per group
            middle = [middle[0], *waits, *middle[2:]]
        rows += [Text(f"  {p}") for p in middle]
        for row in rows:
            row.no_wrap, row.overflow = True, "ellipsis"
        return Group(*rows)


class LogProgress(Progress):
    """Progress as log records (--log-format json): the same status at the same moments as the plain lines (at
    least every `interval`, at changes, the last state at the end), each one "progress" record with its figures
    as fields: counts, total, done (settled), elapsed_s, eta_s, waits, calls, retries, throttled, errors, line."""

    def __init__(self, log: logging.Logger, *, interval: float = 10.0, clock: Clock | None = None,
                 min_gap: float = 2.0) -> None:
        super().__init__(Console(file=io.StringIO()), live=False, interval=interval, clock=clock, min_gap=min_gap)
        self.log = log

    def _print(self, snap: Snapshot, eta: float | None = None) -> None:
        self._last_line = self.clock.monotonic()
        self._last_counts = dict(snap.counts)
        self.lines += 1
        eta = eta if eta is not None else self.eta(snap)
        settled = sum(n for s, n in snap.counts.items() if s in TERMINAL_STATES)
        self.log.info("progress", extra={
            "counts": dict(snap.counts), "total": snap.total, "done": settled,
            "elapsed_s": round(self._elapsed(snap), 1), "eta_s": None if eta is None else round(eta, 1),
            "waits": [group_text(g) for g in snap.groups if g.count], "calls": snap.calls,
            "retries": snap.retries, "throttled": snap.throttled, "errors": snap.errors,
            "line": self.line(snap, eta)})
