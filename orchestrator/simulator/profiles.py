"""Scenario/fault profiles: TOML files in config/profiles/, loaded by name or path (keys: see calm.toml)."""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# The APIs a fault section may name; `default` applies to every API unless that API's section overrides a key.
ROUTES: tuple[str, ...] = (
    "tokens", "list", "batch-status", "batch-detail", "batch-jobs", "bss-query", "bss-unsubscribe",
)
# The read APIs: only their answers can be malformed, partial, stale, trickled or huge.
READ_ROUTES: tuple[str, ...] = ("list", "batch-status", "batch-detail")


@dataclass(frozen=True)
class ApiFaults:
    """Faults injected on one API (the read-answer faults act only on the read APIs)."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_5xx_rate: float = 0.0
    error_5xx_statuses: tuple[int, ...] = (500, 503)
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    throttle_rate: float = 0.0
    throttle_burst: float = 0.0
    busy_rate: float = 0.0
    # Read answers (list, batch-status, batch-detail): malformed, partial, stale, slow.
    not_json_rate: float = 0.0
    truncated_rate: float = 0.0
    short_read_rate: float = 0.0
    results_null_rate: float = 0.0
    array_rate: float = 0.0
    unknown_status_rate: float = 0.0
    missing_ids_rate: float = 0.0
    stale_rate: float = 0.0
    trickle_rate: float = 0.0
    trickle_byte_ms: float = 50.0
    freeze_rate: float = 0.0
    freeze_seconds: float = 0.0


@dataclass(frozen=True)
class Profile:
    """Durations, behaviour and faults of one simulated world."""

    name: str = "calm"
    create_seconds: tuple[float, float] = (2.0, 4.0)
    start_seconds: tuple[float, float] = (2.0, 4.0)
    release_seconds: tuple[float, float] = (2.0, 4.0)
    unsubscribe_release_delay_seconds: tuple[float, float] = (1.0, 3.0)
    deleted_retention_seconds: float = 60.0
    token_ttl_seconds: float = 86400.0
    release_fail_rate: float = 0.0
    create_fail_rate: float = 0.0
    batch_jobs_max_items: int = 100
    batch_status_unknown_http_status: int = 200
    unknown_id_results: str = "all"
    children_top_level: bool = False
    parent_stop_reaches_children: bool = False
    unsubscribed_order: str = "cleared"
    drift_rate: float = 0.0
    unsubscribe_refuse_rate: float = 0.0
    job_id_style: str = "uuid"
    faults: Mapping[str, ApiFaults] = field(default_factory=dict)

    def faults_for(self, route: str) -> ApiFaults:
        """The faults of one API (the default section when it has none of its own)."""
        return self.faults.get(route) or self.faults.get("default") or ApiFaults()

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with some top-level keys changed (tests use it to shorten durations)."""
        return replace(self, **changes)


_SPANS = ("create_seconds", "start_seconds", "release_seconds", "unsubscribe_release_delay_seconds")
_TIMING_KEYS = {*_SPANS, "deleted_retention_seconds", "token_ttl_seconds"}
_RATES = ("release_fail_rate", "create_fail_rate", "drift_rate", "unsubscribe_refuse_rate")
_FLAGS = ("children_top_level", "parent_stop_reaches_children")
_CHOICES: dict[str, tuple[Any, ...]] = {
    "batch_status_unknown_http_status": (200, 400),
    "unknown_id_results": ("all", "failing"),
    "unsubscribed_order": ("cleared", "canceled"),
    "job_id_style": ("uuid", "drs"),
}
_BEHAVIOUR_KEYS = {*_RATES, *_FLAGS, *_CHOICES, "batch_jobs_max_items"}
_FAULT_KEYS = {f.name for f in fields(ApiFaults)}


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _span(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} must be [min, max] seconds, got {value!r}")
    low, high = (_nonneg(name, v) for v in value)
    if low > high:
        raise ValueError(f"{name}: min {low} > max {high}")
    return low, high


def _faults(section: str, raw: Mapping[str, Any], base: ApiFaults) -> ApiFaults:
    unknown = set(raw) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"[faults.{section}]: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"faults.{section}.{key}"
        if key.endswith("_rate") and key != "throttle_rate":
            values[key] = _rate(where, value)
        elif key == "error_5xx_statuses":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(s, int) and 500 <= s <= 599 for s in value)
            ):
                raise ValueError(f"{where} must be a non-empty list of 5xx statuses")
            values[key] = tuple(value)
        else:
            values[key] = _nonneg(where, value)
    return replace(base, **values)


def _behaviour(raw: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _RATES:
            values[key] = _rate(key, value)
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            values[key] = value
        elif key in _CHOICES:
            if value not in _CHOICES[key] or isinstance(value, bool):
                raise ValueError(f"{key} must be one of {list(_CHOICES[key])}, got {value!r}")
            values[key] = value
        else:  # batch_jobs_max_items
            values[key] = int(_nonneg(key, value))
    return values


def checked_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Run-time changes of [behaviour] keys, validated as a profile file's would be (other keys pass as given)."""
    behaviour = {k: v for k, v in changes.items() if k in _BEHAVIOUR_KEYS}
    return {**changes, **_behaviour(behaviour)}


def parse_profile(data: Mapping[str, Any], name: str) -> Profile:
    """Validate a decoded TOML document into a Profile; unknown keys are errors, not silently ignored."""
    unknown = set(data) - {"timing", "behaviour", "faults", "description"}
    if unknown:
        raise ValueError(f"profile {name}: unknown sections {sorted(unknown)}")
    timing = data.get("timing", {})
    behaviour = data.get("behaviour", {})
    for section, keys, raw in (("timing", _TIMING_KEYS, timing), ("behaviour", _BEHAVIOUR_KEYS, behaviour)):
        extra = set(raw) - keys
        if extra:
            raise ValueError(f"profile {name} [{section}]: unknown keys {sorted(extra)}")
    values: dict[str, Any] = {"name": name}
    for key in _SPANS:
        if key in timing:
            values[key] = _span(key, timing[key])
    for key in ("deleted_retention_seconds", "token_ttl_seconds"):
        if key in timing:
            values[key] = _nonneg(key, timing[key])
    values.update(_behaviour(behaviour))
    raw_faults = data.get("faults", {})
    extra = set(raw_faults) - {"default", *ROUTES}
    if extra:
        raise ValueError(f"profile {name}: unknown [faults.*] APIs {sorted(extra)} (known: {list(ROUTES)})")
    default = _faults("default", raw_faults.get("default", {}), ApiFaults())
    faults = {"default": default}
    for route in ROUTES:
        # Per-API sections inherit every key they do not set from [faults.default].
        faults[route] = _faults(route, raw_faults.get(route, {}), default)
    values["faults"] = faults
    return Profile(**values)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (config/profiles/<name>.toml, shipped as orchestrator.profiles) or a file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or Path(text).is_file():
        path = Path(text)
        return parse_profile(tomllib.loads(path.read_text(encoding="utf-8")), path.stem)
    resource = importlib.resources.files("orchestrator.profiles").joinpath(f"{text}.toml")
    if not resource.is_file():
        known = sorted(
            p.name.removesuffix(".toml")
            for p in importlib.resources.files("orchestrator.profiles").iterdir()
            if p.name.endswith(".toml")
        )
        raise ValueError(f"unknown simulator profile {text!r}; known: {', '.join(known)}")
    return parse_profile(tomllib.loads(resource.read_text(encoding="utf-8")), text)
