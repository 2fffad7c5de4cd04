"""Rendering for people: tables and live progress on stderr (rich). JSON goes to stdout elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.engine import Snapshot
from orchestrator.lifecycle import TERMINAL, TaskState
from orchestrator.planning import Plan

OUTCOME_STYLE = {"deleted": "green", "skipped": "cyan", "blocked": "yellow", "failed": "red",
                 "timed_out": "red", "pending": "magenta"}
ROW_LIMIT = 60


def plan_table(plan: Plan, *, limit: int = ROW_LIMIT) -> Table:
    table = Table(title=f"Plan for project {plan.project_id}: {len(plan.items)} task(s)", title_justify="left")
    table.add_column("job id", no_wrap=True, min_width=36)
    for col in ("name", "status", "action", "why"):
        table.add_column(col, overflow="fold")
    for item in plan.items[:limit]:
        table.add_row(item.job_id, item.name or "", item.status or "", item.action.value, item.reason)
    if len(plan.items) > limit:
        table.add_row("…", f"{len(plan.items) - limit} more (use --output json for all)", "", "", "")
    return table


def counts_line(counts: dict[str, int]) -> Text:
    text = Text()
    for i, (k, v) in enumerate(counts.items()):
        if i:
            text.append("  ")
        text.append(f"{k} {v}", style=OUTCOME_STYLE.get(k, ""))
    return text


def summary_table(jobs: list[dict[str, Any]], *, limit: int = ROW_LIMIT) -> Table:
    """Tasks that need attention first; deleted/skipped after, up to `limit` rows."""
    order = {"failed": 0, "timed_out": 1, "blocked": 2, "pending": 3, "skipped": 4, "deleted": 5}
    rows = sorted(jobs, key=lambda j: (order.get(j["outcome"], 9), j["job_id"]))
    table = Table(title="Outcome", title_justify="left")
    table.add_column("job id", no_wrap=True, min_width=36)
    for col in ("name", "outcome", "remote status", "reason"):
        table.add_column(col, overflow="fold")
    for j in rows[:limit]:
        table.add_row(j["job_id"], j.get("name") or "", Text(j["outcome"], style=OUTCOME_STYLE.get(j["outcome"], "")),
                      j.get("remote_status") or "", j.get("reason") or "")
    if len(rows) > limit:
        table.add_row("…", f"{len(rows) - limit} more (use --output json for all)", "", "", "")
    return table


def runs_table(runs: Iterable[Any]) -> Table:
    table = Table(title="Runs", title_justify="left")
    for col in ("run id", "created (UTC)", "status", "exit", "project", "ticket", "consent"):
        table.add_column(col)
    for r in runs:
        table.add_row(r.id, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.status,
                      "" if r.exit_code is None else str(r.exit_code), r.project_id, r.ticket or "", r.consent)
    return table


class Progress:
    """Live progress on a terminal; periodic plain lines elsewhere (e.g. CI logs)."""

    def __init__(self, console: Console, *, live: bool, every: float = 5.0) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=False) if live else None
        self.every = every
        self._last = 0.0
        self._snapshot: Snapshot | None = None

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, snap: Snapshot) -> None:
        self._snapshot = snap
        if self.live is not None:
            self.live.update(self._render(snap))
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.console.print(self._line(snap), highlight=False)

    @staticmethod
    def _done(snap: Snapshot) -> int:
        return sum(v for k, v in snap.counts.items() if TaskState(k) in TERMINAL)

    def _eta(self, snap: Snapshot) -> str:
        done = self._done(snap)
        elapsed = (snap.now - snap.started).total_seconds()
        if not done or done >= snap.total:
            return "—" if done < snap.total else "done"
        return f"{elapsed * (snap.total - done) / done:.0f}s"

    def _line(self, snap: Snapshot) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(snap.counts.items()))
        elapsed = (snap.now - snap.started).total_seconds()
        return f"[{elapsed:6.1f}s] {self._done(snap)}/{snap.total} done — {states}; ETA {self._eta(snap)}"

    def _render(self, snap: Snapshot) -> Table:
        table = Table.grid(padding=(0, 2))
        elapsed = (snap.now - snap.started).total_seconds()
        done = self._done(snap)
        width = 40
        filled = int(width * done / snap.total) if snap.total else width
        table.add_row(Text(f"{'█' * filled}{'░' * (width - filled)} {done}/{snap.total}"),
                      Text(f"elapsed {elapsed:.0f}s  ETA {self._eta(snap)}  API calls {snap.calls}"))
        table.add_row(Text("states"), counts_line({k: snap.counts[k] for k in sorted(snap.counts)}))
        waiting = ", ".join(f"{s} ×{n}" for s, n in snap.waiting.most_common(4))
        table.add_row(Text("waiting on"), Text(waiting or "—"))
        return table
