"""The knobs of a run, and the numbers the engine's rules are written in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_CLAIM_SIZE = 100
MAX_RESENDS = 6  # unknown outcomes in a row a task may be re-sent for (after reading it) before it is failed
MAX_REJECTIONS = 3  # refusals (DRS.M00304 and the like), each followed by a fresh detail read, before failing
MAX_BAD_READS = 8  # unreadable answers in a row about one task (each retried by the client first) before blocking


@dataclass(frozen=True)
class Tuning:
    """The knobs of a run; every wait has a deadline."""

    batch_size: int = 100
    poll_interval: float = 5.0
    max_poll_interval: float = 60.0
    stop_timeout: float = 1800.0
    delete_timeout: float = 600.0
    timeout: float = 6 * 3600.0
    force: bool = False
    no_force: bool = False
    breakpoint: bool = False
    terminate_attempts: int = 2  # plain terminates before escalating to force_terminate
    lease_seconds: float = DEFAULT_LEASE_SECONDS  # a dead worker's tasks are taken over after this
    claim_size: int = DEFAULT_CLAIM_SIZE  # tasks a worker claims at a time on a shared database
    unsubscribe_prepaid: bool = False  # yearly/monthly tasks: unsubscribe their order (BSS), then delete

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def fresh_for(self) -> float:
        """How old a reading may be for a first stop or delete to go out on it: about one poll interval."""
        return max(2.0, self.poll_interval)

    @property
    def lease_check(self) -> float:
        """The one lease rule: renew, re-claim and check every third of a lease."""
        return self.lease_seconds / 3
