"""What writers hand the store (Event, Change, Context) and how events become chained audit rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import Any

from orchestrator.lifecycle import TERMINAL, Step, outcome_of
from orchestrator.store import audit
from orchestrator.store.schema import AuditRecord


@dataclass(frozen=True)
class Event:
    """A transition (or run-level event) to append to the trail.

    `values`: structured facts of the event (a breakpoint, BSS resource ids), JSON-encodable; chained when given.
    """

    trigger: str
    job_id: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    remote_status: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    request_ids: tuple[str, ...] = ()
    detail: str | None = None
    values: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, step: Step, **kw: Any) -> Event:
        outcome = kw.pop("outcome", None)
        if outcome is None and step.dest in TERMINAL:
            outcome = outcome_of(step.dest)
        return cls(trigger=step.trigger, job_id=step.job_id, from_state=step.source.value,
                   to_state=step.dest.value, remote_status=step.remote_status, outcome=outcome, **kw)


@dataclass
class Change:
    """Column updates for one task, with the event that records why (None: bookkeeping only)."""

    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    event: Event | None = None


@dataclass(frozen=True)
class Context:
    """Who is writing: stamped on every audit record."""

    actor: dict[str, Any]
    worker: str
    ticket: str | None = None
    reason: str | None = None

    @property
    def actor_json(self) -> str:
        return json.dumps(self.actor, sort_keys=True, separators=(",", ":"))


def values_json(values: Mapping[str, Any] | None) -> str | None:
    """An event's values as the canonical JSON text that is stored and hashed."""
    if values is None:
        return None
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain(run_id: str, seq: int, prev: str, ctx: Context, events: Sequence[Event],
          now: datetime) -> tuple[list[dict[str, Any]], int, str]:
    """Audit rows for `events`, chained after (seq, prev): (rows, the new head seq, the new head hash)."""
    rows: list[dict[str, Any]] = []
    actor = ctx.actor_json
    encode = audit.encoder({"run_id": run_id, "at": now, "actor": actor, "worker": ctx.worker,
                            "ticket": ctx.ticket, "reason": ctx.reason})
    for ev in events:
        seq += 1
        row: dict[str, Any] = {
            "run_id": run_id, "seq": seq, "at": now, "job_id": ev.job_id, "from_state": ev.from_state,
            "to_state": ev.to_state, "trigger": ev.trigger, "remote_status": ev.remote_status,
            "outcome": ev.outcome, "error_code": ev.error_code,
            "request_ids": ",".join(r for r in ev.request_ids if r) or None,
            "actor": actor, "worker": ctx.worker, "ticket": ctx.ticket, "reason": ctx.reason,
            "detail": ev.detail, "prev_hash": prev, "values": values_json(ev.values),
        }
        row["hash"] = prev = sha256(encode(row)).hexdigest()
        rows.append(row)
    return rows, seq, prev


def record_dict(r: AuditRecord) -> dict[str, Any]:
    """An audit record as a plain dict (chain fields, optional fields and hash)."""
    return {name: getattr(r, name) for name in (*audit.CHAIN_FIELDS, *audit.OPTIONAL_FIELDS, "hash")}
