"""The use cases under their first name, kept while callers move to `orchestrator.usecases` (a face, no code).

`plan(client, selection, endpoint, clock)` is the one helper defined here: the old one-target planning call.
"""

from __future__ import annotations

from orchestrator.clock import Clock
from orchestrator.drs.client import DrsClient
from orchestrator.planning import Plan, make_plan
from orchestrator.selection import Selection
from orchestrator.usecases import (
    Connection,
    RunSummary,
    connect,
    execute,
    make_client,
    settings_for_run,
    start_run,
    summarize,
    tuning_for_run,
    tuning_from,
)


async def plan(client: DrsClient, selection: Selection, endpoint: str, clock: Clock) -> Plan:
    """Plan one target with an open client (read-only)."""
    return await make_plan(client, selection, endpoint=endpoint, now=clock.now())


__all__ = ["Connection", "RunSummary", "connect", "execute", "make_client", "plan", "settings_for_run",
           "start_run", "summarize", "tuning_for_run", "tuning_from"]
