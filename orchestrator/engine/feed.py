"""The plan pipelined into the run: planning hands the engine each batch of tasks it has recorded, so their
stops go out while the rest of the plan is still being read (issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

UNPLANNED = "unplanned_targets"  # in Run.options: target label -> why its planning failed (resume retries it)


def unplanned_targets(options: Mapping[str, Any]) -> dict[str, str]:
    """The targets of a run whose planning failed, with the reason; `resume` plans them again."""
    return dict(options.get(UNPLANNED) or {})


class Feed:
    """Tasks recorded by a planning still under way. The engine adopts them as they come and does not end the
    run (nor run its final check) before planning has finished; a planning that failed ends the run unfinished
    (interrupted, resumable), whatever the engine already did."""

    def __init__(self) -> None:
        self._rows: list[Any] = []  # Task rows, or objects with the same attributes
        self.arrived = asyncio.Event()  # set when rows are waiting or planning finished
        self.done = False
        self.failure: BaseException | None = None
        self.discarded = False  # nothing matched: the run was removed, the engine ends without recording
        # Called before the engine records how the run ended (the planner opens the run's trail, if not yet).
        self.before_end: Callable[[], None] | None = None

    def push(self, rows: Iterable[Any]) -> None:
        """Rows committed to the store (their tasks and `plan` records): the engine may act on them now."""
        self._rows.extend(rows)
        self.arrived.set()

    def finish(self, failure: BaseException | None = None, *, discarded: bool = False) -> None:
        """Planning is over: every task of the plan was pushed, or `failure` stopped it, or (`discarded`) the
        selection matched nothing and the run recorded before planning is gone."""
        self.done, self.failure, self.discarded = True, failure, discarded
        self.arrived.set()

    def take(self) -> list[Any]:
        rows, self._rows = self._rows, []
        if not self.done:
            self.arrived.clear()
        return rows

    @property
    def waiting(self) -> bool:
        """Planning is still under way, or recorded tasks wait to be taken."""
        return not self.done or bool(self._rows)

    @property
    def complete(self) -> bool:
        """Planning finished and recorded every task."""
        return self.done and self.failure is None


def planned(feed: Feed | None) -> bool:
    """Every task of the plan is recorded (no planning under way, or it finished and recorded them all)."""
    return feed is None or feed.complete
