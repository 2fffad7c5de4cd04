"""The world's shared state: every task, the clock, the profile, the seeded random sources and the ledger."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

from orchestrator.clock import Clock

from .jobs import Job
from .ledger import Ledger
from .profiles import Profile


class WorldState:
    """What the status machine, the batch rules, billing and the reads share; guarded by one re-entrant lock."""

    def __init__(self, clock: Clock, profile: Profile, seed: int, ledger: Ledger, region: str = "cn-north-4",
                 project_id: str = "") -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.profile = profile
        self.ledger = ledger
        self.region = region
        self.project_id = project_id
        self.jobs: dict[str, Job] = {}
        self.purged: set[str] = set()
        # Ids come from the seeded RNG (same seed, same ids); runtime draws (jitter, failures) from another
        # so that adding a job never shifts the outcome of a release.
        self.id_rng = random.Random(seed)
        self.rng = random.Random(f"runtime-{seed}")

    def mono(self) -> float:
        return self.clock.monotonic()

    def wall(self, mono: float) -> datetime:
        """The wall time of a monotonic instant."""
        return self.clock.now() - timedelta(seconds=self.clock.monotonic() - mono)

    def span(self, span: tuple[float, float]) -> float:
        return self.rng.uniform(*span)

    def violate(self, rule: str, job_id: str | None = None, detail: str = "") -> None:
        self.ledger.violate(rule, job_id, detail, self.clock.now())

    def missing_code(self, job_id: str) -> str:
        """Why an id is not readable: purged after deletion, or it never existed."""
        return "DRS.M05004" if job_id in self.purged else "DRS.M00289"
