"""The safety rails every teardown goes through, whoever calls it: --max-targets, plan drift, overlap with an
unfinished run, and one owner per run. Each refuses with the error the contract's exit code comes from."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from orchestrator.errors import Refused, RunBusy
from orchestrator.lifecycle import TERMINAL
from orchestrator.planning import Action, Plan, drift
from orchestrator.store.repo import Store

ACTIONABLE = frozenset({Action.STOP_THEN_DELETE, Action.DELETE, Action.WAIT})
SHOWN_DIFFERENCES = 50


def refused(message: str, document: dict[str, Any] | None = None) -> Refused:
    """A Refused carrying the JSON document to emit with it (e.g. a dry run's plan)."""
    exc = Refused(message)
    exc.document = document  # type: ignore[attr-defined]
    return exc


def check_max_targets(selected: int, limit: int | None) -> None:
    if limit is not None and selected > limit:
        raise Refused(f"refused: {selected} tasks selected, more than --max-targets {limit}; nothing was sent")


def check_drift(reviewed: Plan, live: Plan, source: str) -> None:
    problems = drift(reviewed, live)
    if problems:
        lines = [f"  drift: {p}" for p in problems[:SHOWN_DIFFERENCES]]
        raise Refused("\n".join([*lines, f"refused: the live state drifted from the reviewed plan {source} "
                                          f"({len(problems)} difference(s)); nothing was sent. Plan again."]))


def check_overlap(store: Store, job_ids: Iterable[str], *, exclude: str | None = None) -> None:
    """A new run may not act on tasks an unfinished run of this store still has in hand."""
    wanted = set(job_ids)
    if not wanted:
        return
    for run in store.unfinished_runs():
        if run.id == exclude:
            continue
        shared = sorted(t.job_id for t in store.tasks(run.id) if t.state not in TERMINAL and t.job_id in wanted)
        if shared:
            raise Refused(f"refused: {len(shared)} selected task(s) ({', '.join(shared[:3])}"
                          f"{', …' if len(shared) > 3 else ''}) belong to the unfinished run {run.id} "
                          f"({run.status}); finish it first: drs-teardown resume {run.id}; nothing was sent")


def own_run(store: Store, run_id: str, holder: str) -> Any:
    """Become the one process that works `run_id` on this store, or raise RunBusy naming the holder.

    The store's claim (`Store.own_run`) is released by the OS when the process dies; a store without it gets
    the older check: refuse while a live process on this host holds a lease on one of the run's tasks."""
    claim = getattr(store, "own_run", None)
    if callable(claim):
        return claim(run_id, holder)
    _check_no_live_owner(store, run_id)
    return None


def _check_no_live_owner(store: Store, run_id: str) -> None:
    host = socket.gethostname()
    for t in store.tasks(run_id):
        if not t.lease_owner or t.state in TERMINAL:
            continue
        owner_host, _, rest = t.lease_owner.partition(":")
        pid_text = rest.split(":")[0]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if owner_host == host and pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            raise RunBusy(f"run {run_id} is being worked by process {pid} on {host} ({t.lease_owner}); "
                          "wait for it or stop it first")
