"""The DRS simulator: a strict, real-HTTP stand-in for the DRS v3 API (and the BSS and IAM calls a teardown
needs), with fault profiles, knobs and inspection. Imported only by the CLI's `simulator`/`demo` and by tests."""

from orchestrator.clock import Clock, ManualClock, RealClock

from .answers import ANSWER_FAULTS
from .core import DEFAULT_PROJECT_ID, Simulator
from .credentials import IamDirectory
from .faults import KNOB_FAULTS
from .jobs import JobSpec
from .ledger import VIOLATIONS
from .machine import DRIFTS
from .profiles import ROUTES, ApiFaults, Profile, load_profile

# The simulator's old name for the real clock.
SystemClock = RealClock

__all__ = [
    "ANSWER_FAULTS",
    "DEFAULT_PROJECT_ID",
    "DRIFTS",
    "KNOB_FAULTS",
    "ROUTES",
    "VIOLATIONS",
    "ApiFaults",
    "Clock",
    "IamDirectory",
    "JobSpec",
    "ManualClock",
    "Profile",
    "RealClock",
    "Simulator",
    "SystemClock",
    "load_profile",
]
