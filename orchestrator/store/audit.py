"""The audit hash chain: canonical encoding, hashing and verification.

Canonical encoding (version 1) of a record: a JSON object with exactly the keys in CHAIN_FIELDS, sorted,
no whitespace (separators "," and ":"), UTF-8, non-ASCII kept as is; `at` as ISO-8601 UTC with microseconds
and a trailing "Z"; absent values as null. hash = lower-hex SHA-256 of that encoding, which includes
`prev_hash`. The first record of a run chains to GENESIS(run_id) = SHA-256("drs-teardown audit v1 " + run_id).

Optional fields (OPTIONAL_FIELDS: `values`, an event's structured values as canonical JSON text) join the
object only when the record has them (not null): every record written without them encodes exactly as
before, so every existing chain verifies byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

CHAIN_FIELDS: tuple[str, ...] = (
    "run_id", "seq", "at", "job_id", "from_state", "to_state", "trigger", "remote_status", "outcome",
    "error_code", "request_ids", "actor", "worker", "ticket", "reason", "detail", "prev_hash",
)

OPTIONAL_FIELDS: tuple[str, ...] = ("values",)


def genesis(run_id: str) -> str:
    return hashlib.sha256(f"drs-teardown audit v1 {run_id}".encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    # A naive value is UTC by contract (never the machine's local time, which would change the hash).
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The encoding is json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False); it is written out
# here field by field because it is on the engine's hot path (every transition is hashed). A test holds the two
# equal over random records.
_KEYS = tuple(sorted((*CHAIN_FIELDS, *OPTIONAL_FIELDS)))
_PREFIX = {name: encode_basestring(name) + ":" for name in _KEYS}
_OPTIONAL = frozenset(OPTIONAL_FIELDS)


def _json(value: Any) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, datetime):
        return encode_basestring(format_time(value))
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed."""
    get = record.get
    parts = []
    for name in _KEYS:
        value = get(name)
        if value is None and name in _OPTIONAL:
            continue
        parts.append(_PREFIX[name] + _json(value))
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def encoder(constants: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes]:
    """canonical() for many records sharing the values in `constants` (one commit: run, time, actor, worker,
    ticket, reason): those are encoded once, into a template the other fields are formatted into."""
    variable = tuple(name for name in _KEYS if name not in constants)
    templates: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}

    def template(present: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        parts, names = [], []
        for name in _KEYS:
            if name in _OPTIONAL and name not in present:
                continue
            if name in constants:
                parts.append((_PREFIX[name] + _json(constants[name])).replace("%", "%%"))
            else:
                parts.append(_PREFIX[name] + "%s")
                names.append(name)
        return "{" + ",".join(parts) + "}", tuple(names)

    optional = tuple(name for name in variable if name in _OPTIONAL)

    def encode(record: Mapping[str, Any]) -> bytes:
        present = tuple(name for name in optional if record.get(name) is not None)
        found = templates.get(present)
        if found is None:
            found = templates[present] = template(present)
        text, names = found
        get = record.get
        return (text % tuple(["null" if (v := get(n)) is None else encode_basestring(v) if type(v) is str
                              else _json(v) for n in names])).encode("utf-8")

    return encode


@dataclass(frozen=True)
class Verification:
    """The result of recomputing one run's chain."""

    run_id: str
    records: int
    head_hash: str
    ok: bool
    broken_seq: int | None = None
    problem: str | None = None


def verify_chain(run_id: str, records: Iterable[Mapping[str, Any]], head_seq: int | None = None,
                 head_hash: str | None = None) -> Verification:
    """Recompute the chain over records in seq order; name the first broken record.

    head_seq/head_hash (from the run row) also catch a truncated tail.
    """
    prev = genesis(run_id)
    expected_seq = 1
    count = 0
    for rec in records:
        seq = rec["seq"]
        if seq != expected_seq:
            problem = (f"record seq {seq} found where seq {expected_seq} was expected "
                       "(a record was deleted, inserted or reordered)")
            return Verification(run_id, count, prev, False, seq, problem)
        if rec["prev_hash"] != prev:
            return Verification(run_id, count, prev, False, seq,
                                f"record seq {seq}: prev_hash does not match the hash of the record before it")
        computed = record_hash(rec)
        if computed != rec["hash"]:
            return Verification(run_id, count, prev, False, seq,
                                f"record seq {seq}: content does not match its hash (the record was edited)")
        prev = computed
        expected_seq += 1
        count += 1
    if head_seq is not None and head_seq != count:
        return Verification(run_id, count, prev, False, count + 1 if head_seq > count else head_seq,
                            f"the run's head says {head_seq} records, the trail has {count}")
    if head_hash is not None and head_hash != prev:
        return Verification(run_id, count, prev, False, count, "the run's head hash does not match the last record")
    return Verification(run_id, count, prev, True)
