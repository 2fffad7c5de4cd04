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

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CHAIN_FIELDS: tuple[str, ...] = (
    "run_id", "seq", "at", "job_id", "from_state", "to_state", "trigger", "remote_status", "outcome",
    "error_code", "request_ids", "actor", "worker", "ticket", "reason", "detail", "prev_hash",
)

OPTIONAL_FIELDS: tuple[str, ...] = ("values",)


def genesis(run_id: str) -> str:
    return hashlib.sha256(f"drs-teardown audit v1 {run_id}".encode()).hexdigest()


def format_time(value: datetime) -> str:
    # A naive value is UTC by contract (never the machine's local time, which would change the hash).
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed."""
    doc: dict[str, Any] = {}
    for name in CHAIN_FIELDS:
        value = record.get(name)
        doc[name] = format_time(value) if isinstance(value, datetime) else value
    for name in OPTIONAL_FIELDS:
        value = record.get(name)
        if value is not None:
            doc[name] = value
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


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
