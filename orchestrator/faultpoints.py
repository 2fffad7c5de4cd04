"""Crash points: a testing hook that makes the process kill itself at a named boundary, so a crash test can
stop the orchestrator at exactly the instant it means to (the crash matrix in tests/test_crash_matrix.py).

Armed only by the environment, read once at import:

    DRS_TEARDOWN_CRASH_AT=POINT:KIND:N[:SIGNAL][,...]

POINT is one of `after_intent` (the intent committed, the request not sent), `after_send` (the request went
out and its answer came back, unread), `after_response` (the answers are in, their outcome not yet
committed); KIND is `stop`, `delete`, `poll`, `list` or `detail` (or `*`); N counts the hits of that point
and kind, from 1; SIGNAL is KILL (the default), TERM or INT. Unset, `hit` returns at its first test.
Never set it outside tests: it exists to kill the process.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

ENV = "DRS_TEARDOWN_CRASH_AT"
POINTS = ("after_intent", "after_send", "after_response")
KINDS = ("stop", "delete", "poll", "list", "detail", "unsubscribe", "bss-unsubscribe", "bss-query", "*")
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


@dataclass
class CrashPoint:
    """One armed point: signal the process on the `nth` hit of (`point`, `kind`)."""

    point: str
    kind: str
    nth: int
    signum: int
    hits: int = 0


def parse(spec: str) -> list[CrashPoint]:
    """Parse the variable's value; a malformed value raises ValueError (a silent no-op would hide a typo)."""
    points: list[CrashPoint] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        fields = part.split(":")
        if len(fields) not in (3, 4) or fields[0] not in POINTS or fields[1] not in KINDS \
                or not fields[2].isdigit() or int(fields[2]) < 1 \
                or (len(fields) == 4 and fields[3].upper() not in _SIGNALS):
            raise ValueError(f"{ENV}: cannot read {part!r}; expected POINT:KIND:N[:SIGNAL] with POINT in "
                             f"{'/'.join(POINTS)}, KIND in {'/'.join(KINDS)}, SIGNAL in {'/'.join(_SIGNALS)}")
        signum = _SIGNALS[fields[3].upper()] if len(fields) == 4 else signal.SIGKILL
        points.append(CrashPoint(fields[0], fields[1], int(fields[2]), signum))
    return points


_armed: list[CrashPoint] = parse(os.environ.get(ENV, ""))


def armed() -> bool:
    """True when a crash point is set (callers use it to skip computing a `kind`)."""
    return bool(_armed)


def arm(spec: str) -> None:
    """Replace the armed points (tests in-process; the variable is read at import)."""
    global _armed
    _armed = parse(spec)


def hit(point: str, kind: str) -> None:
    """Count a pass through `point`; on the armed hit, signal this process (SIGKILL does not return)."""
    if not _armed:
        return
    for p in _armed:
        if p.point == point and p.kind in (kind, "*"):
            p.hits += 1
            if p.hits == p.nth:
                name = signal.Signals(p.signum).name
                sys.stderr.write(f"crash point {point}:{kind}:{p.nth}: {name}\n")
                sys.stderr.flush()
                os.kill(os.getpid(), p.signum)
