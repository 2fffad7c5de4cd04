"""The DRS simulator: a strict, real-HTTP stand-in for the DRS v3 API, with fault profiles and inspection."""

from .clock import Clock, ManualClock, SystemClock
from .core import DEFAULT_PROJECT_ID, Simulator
from .jobs import JobSpec
from .profiles import ApiFaults, Profile, load_profile
from .world import VIOLATIONS

__all__ = [
    "DEFAULT_PROJECT_ID",
    "VIOLATIONS",
    "ApiFaults",
    "Clock",
    "JobSpec",
    "ManualClock",
    "Profile",
    "Simulator",
    "SystemClock",
    "load_profile",
]
