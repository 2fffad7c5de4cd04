"""One owner per run: taking a run, the status a user sees, and settling runs whose owner died."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from orchestrator.errors import StoreError
from orchestrator.store.records import Context, Event
from orchestrator.store.schema import Run
from orchestrator.store.sessions import WORKING, StoreCore, retrying
from orchestrator.store.status import Holder, RunStatus, effective


class Ownership(StoreCore):
    """own_run, run_status, settle_dead_runs; the dialects supply how a run is taken and how liveness is told."""

    _owned: dict[str, Holder]

    @contextmanager
    def own_run(self, run_id: str, holder: str, *, command: str | None = None,
                now: datetime | None = None) -> Iterator[Holder]:
        """Work run `run_id` as its only owner for the duration of the block, or RunBusy naming the live holder.

        Take it before writing any intent (before create_run, for a new run: the run is recorded with its
        owner). `holder` is the worker id (Context.worker); pid and host are this process's. On SQLite the OS
        releases the hold when the process dies; on PostgreSQL a heartbeat keeps it, and a holder whose
        heartbeat is older than `owner_expiry` (or whose pid is gone, on this host) is taken over.
        """
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only: a run cannot be worked from it")
        me = Holder.here(holder, command, now)
        release = self._take_run(run_id, me)
        self._owned[run_id] = me
        try:
            yield me
        finally:
            self._owned.pop(run_id, None)
            with contextlib.suppress(StoreError):
                self._mark_released(run_id, me)
            release()

    @contextmanager
    def exclusive(self, name: str, holder: str) -> Iterator[None]:
        """Hold the store-wide lock `name` for the block, or RunBusy at once: steps two processes must not
        interleave, such as a new run's overlap check and its recording. Released when the process dies (a file
        lock on SQLite, a session's advisory lock on PostgreSQL)."""
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only: nothing can be recorded in it")
        release = self._take_exclusive(name, Holder.here(holder, name))
        try:
            yield
        finally:
            release()

    def owns(self, run_id: str) -> bool:
        return run_id in self._owned

    def _stamp_owner(self, run: Run) -> None:
        me = self._owned.get(run.id)
        if me is not None:
            for name, value in me.owner_columns().items():
                setattr(run, name, value)

    @retrying
    def _record_owner(self, run_id: str, me: Holder, now: datetime | None = None) -> None:
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(**me.owner_columns(now)))

    @retrying
    def _mark_released(self, run_id: str, me: Holder) -> None:
        # The owner stays recorded (who worked it last, since when); no heartbeat means nobody holds it.
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id, Run.owner == me.id).values(owner_heartbeat=None))

    def run_status(self, run: Run) -> RunStatus:
        """The status a user should see: planning/running only while the owner is alive, else interrupted."""
        return effective(run, run.status in WORKING and self._owner_alive(run))

    def settle_dead_runs(self, ctx: Context | None = None, now: datetime | None = None) -> list[str]:
        """Record as interrupted every planning/running run whose owner is gone; returns their ids.

        With `ctx`, each gets a `run_interrupted` record naming the owner. A read-only store settles nothing
        (run_status still shows such runs as interrupted).
        """
        if self.read_only:
            return []
        when = now or datetime.now(UTC)
        settled = []
        for run in self._working_runs():
            if run.id in self._owned or self._owner_alive(run):
                continue
            status = effective(run, False)
            event = Event(trigger="run_interrupted", detail=status.detail)
            if self._settle(run, lambda s, r=run, e=event: self._interrupt(s, r, ctx, e, when)):
                settled.append(run.id)
        return settled

    @retrying
    def _working_runs(self) -> list[Run]:
        with self.session() as s:
            return list(s.execute(select(Run).where(Run.status.in_(WORKING))).scalars())

    def _interrupt(self, s: Any, run: Run, ctx: Context | None, event: Event, now: datetime) -> bool:
        # Compare-and-set on what was seen dead: an owner that came back (or a new one) since is left alone.
        done = s.execute(update(Run).where(Run.id == run.id, Run.status.in_(WORKING),
                                           Run.owner.is_(None) if run.owner is None else Run.owner == run.owner,
                                           Run.owner_heartbeat.is_(None) if run.owner_heartbeat is None
                                           else Run.owner_heartbeat == run.owner_heartbeat)
                         .values(status="interrupted"))
        if not done.rowcount:
            return False
        if ctx is not None:
            self._append(s, run.id, ctx, [event], now)
        return True

    # -- dialect hooks -----------------------------------------------------------------------------------------

    def _take_run(self, run_id: str, me: Holder) -> Callable[[], None]:
        """Take the run for `me` (RunBusy if a live process holds it); returns how to let it go."""
        raise NotImplementedError

    def _take_exclusive(self, name: str, me: Holder) -> Callable[[], None]:
        """Take the store-wide lock `name` (RunBusy if another holds it); returns how to let it go."""
        raise NotImplementedError

    def _settle(self, run: Run, interrupt: Callable[[Any], bool]) -> bool:
        """Run `interrupt(session)` while no owner can take the run meanwhile."""
        raise NotImplementedError
