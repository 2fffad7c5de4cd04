"""The safety rails every teardown goes through, whoever calls it: --max-targets, plan drift, overlap with an
unfinished run, and one owner per run. Each refuses with the error the contract's exit code comes from."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from orchestrator.errors import Refused, RunBusy
from orchestrator.lifecycle import TERMINAL
from orchestrator.planning import Action, Plan, drift
from orchestrator.store.repo import Store

ACTIONABLE = frozenset({Action.STOP_THEN_DELETE, Action.DELETE, Action.WAIT, Action.UNSUBSCRIBE_THEN_DELETE})
NEW_RUNS_LOCK = "new-runs"  # the store-wide lock held while a new run checks for overlap and records itself
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
        now = {i.job_id: i.action for i in live.items}
        if any(i.action is Action.UNSUBSCRIBE_THEN_DELETE and now.get(i.job_id) is Action.BLOCK
               for i in reviewed.items):
            lines.append(f"  {source} was planned with --unsubscribe-prepaid (a billing action): pass it to run "
                         "as well to execute it")
        raise Refused("\n".join([*lines, f"refused: the live state drifted from the reviewed plan {source} "
                                          f"({len(problems)} difference(s)); nothing was sent. Plan again."]))


def check_overlap(store: Store, job_ids: Iterable[str], *, exclude: str | None = None) -> None:
    """A new run may not act on tasks an unfinished run of this store still has in hand. Only the unfinished
    runs holding one of these ids are read (one indexed query first), so it is cheap enough for every batch of
    a run still being planned."""
    wanted = set(job_ids)
    if not wanted:
        return
    for run in store.unfinished_runs_overlapping(sorted(wanted), None):
        if run.id == exclude:
            continue
        shared = sorted(t.job_id for t in store.tasks(run.id) if t.state not in TERMINAL and t.job_id in wanted)
        if shared:
            raise Refused(f"refused: {len(shared)} selected task(s) ({', '.join(shared[:3])}"
                          f"{', …' if len(shared) > 3 else ''}) belong to the unfinished run {run.id} "
                          f"({run.status}); finish it first: drs-teardown resume {run.id}; nothing was sent")


class RunClaim:
    """This process's hold on a run (Store.own_run, entered): released by `release()`, or by the OS at exit."""

    def __init__(self, hold: Any) -> None:
        self._hold: Any = hold
        self.holder = hold.__enter__()

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.__exit__(None, None, None)


def own_run(store: Store, run_id: str, holder: str) -> RunClaim:
    """Become the one process that works `run_id` on this store, or raise RunBusy naming the holder (pid, host,
    since). On SQLite the OS releases the claim when the process dies; on PostgreSQL a heartbeat keeps it."""
    return RunClaim(store.own_run(run_id, holder))


@contextlib.contextmanager
def creating_runs(store: Store, holder: str, *, wait: float = 30.0) -> Iterator[None]:
    """Serialise "check overlap, then record" between processes on one store (SQLite or PostgreSQL, any hosts),
    so two runs started at once cannot both pass the overlap check and both work the same tasks."""
    deadline = time.monotonic() + wait
    while True:
        try:
            hold = store.exclusive(NEW_RUNS_LOCK, holder)
            hold.__enter__()
            break
        except RunBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        hold.__exit__(None, None, None)
