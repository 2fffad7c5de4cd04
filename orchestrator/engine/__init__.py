"""The engine: a pure decision core (decide.py) under an I/O loop (loop.py), with the lease protocol (leases.py)
and progress bookkeeping (progress.py) as their own pieces."""

from orchestrator.engine.loop import Engine
from orchestrator.engine.tuning import DEFAULT_CLAIM_SIZE, DEFAULT_LEASE_SECONDS, Tuning

__all__ = [
    "DEFAULT_CLAIM_SIZE",
    "DEFAULT_LEASE_SECONDS",
    "Engine",
    "Tuning",
]
