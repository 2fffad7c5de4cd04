"""Small text helpers shared by the exports and the HTML report: escaping, times, durations, clipping."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def esc(value: Any) -> str:
    """HTML-escaped text (quotes too, so it is safe in attributes); None as empty."""
    return html.escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def offset(at: datetime, start: datetime) -> str:
    """`t+12.3 s`: a time relative to the run's start, as the timeline's axis counts it."""
    return f"t+{duration(max((at - start).total_seconds(), 0.0))}"


def plain(value: Any) -> str:
    """One line of terminal-safe text: control characters (escapes, newlines) become spaces."""
    return "" if value is None else _CONTROL.sub(" ", str(value))


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
