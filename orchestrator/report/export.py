"""Audit export (fixed-width table, JSON, CSV) and the chain verification summary of a run. Read-only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.errors import StoreError
from orchestrator.report.formatting import clip, plain
from orchestrator.store import audit
from orchestrator.store.records import values_json
from orchestrator.store.repo import Store, record_dict
from orchestrator.store.schema import AuditRecord, Run

FORMATS: tuple[str, ...] = ("table", "json", "csv")
ROW_FIELDS: tuple[str, ...] = (*audit.CHAIN_FIELDS, "hash")
ACTOR_FIELDS: tuple[str, ...] = ("os_user", "host", "tool", "credential")
# `values` (an event's structured values: a breakpoint, an unsubscribe's order and resource ids) is optional, as
# in the chain's encoding: a JSON record has it only when set (an object, hashed as its compact sorted JSON text,
# like `actor`); the CSV always has the column (that text, or empty).
CSV_FIELDS: tuple[str, ...] = tuple(
    name for f in ROW_FIELDS
    for name in ([f"actor_{a}" for a in ACTOR_FIELDS] if f == "actor" else [f, "values"] if f == "detail" else [f])
)
# A spreadsheet evaluates a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def require_run(store: Store, run_id: str) -> Run:
    run: Run | None = store.run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id}")
    return run


def audit_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every audit record of a run in seq order, as JSON-ready dicts (actor parsed, `at` ISO-8601 UTC)."""
    require_run(store, run_id)
    return [_row(r) for r in store.records(run_id)]


def _row(record: AuditRecord) -> dict[str, Any]:
    row = record_dict(record)
    row["at"] = audit.format_time(row["at"])
    row["actor"] = parse_actor(row["actor"])
    out = {name: row.get(name) for name in ROW_FIELDS}
    if row.get("values") is not None:
        out = {**{k: v for k, v in out.items() if k not in ("prev_hash", "hash")},
               "values": parse_values(row["values"]), "prev_hash": out["prev_hash"], "hash": out["hash"]}
    return out


def parse_values(text: str) -> Any:
    """An event's values as stored (canonical JSON text); text that does not parse is kept verbatim as `raw`."""
    try:
        return json.loads(text)
    except ValueError:
        return {"raw": text}


def parse_actor(text: str | None) -> dict[str, Any]:
    """The actor JSON as stored; text that does not parse (tampering, a bug) is kept verbatim as `raw`."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": text}


def export_audit(store: Store, run_id: str, fmt: str) -> str:
    """The trail of a run as `table` (fixed-width text), `json` (a list of records) or `csv` (UTF-8, BOM)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown audit format {fmt!r} (use one of {', '.join(FORMATS)})")
    rows = audit_rows(store, run_id)
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(rows)
    return _table(rows)


def _csv(rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    # The BOM tells Excel the file is UTF-8; the csv module writes RFC 4180 (CRLF, doubled quotes).
    out.write("\ufeff")
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        flat: dict[str, Any] = {}
        for name in ROW_FIELDS:
            if name == "actor":
                actor = row.get("actor") or {}
                for a in ACTOR_FIELDS:
                    flat[f"actor_{a}"] = _cell(actor.get(a))
            else:
                flat[name] = _cell(row.get(name))
        values = row.get("values")
        flat["values"] = "" if values is None else _cell(values_json(values))  # the text that was hashed
        writer.writerow(flat)
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: None as empty; text a spreadsheet would run as a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


# (title, key, width cap); None: as wide as the widest value.
_TABLE_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("seq", "seq", None),
    ("time (UTC)", "time", None),
    ("job", "job", 36),
    ("from→to", "move", 21),
    ("trigger", "trigger", 15),
    ("remote status", "remote", 31),
    ("outcome", "outcome", 9),
    ("worker", "worker", 28),
)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [_table_cells(r) for r in rows]
    widths = []
    for title, key, cap in _TABLE_COLUMNS:
        widest = max([len(title), *(len(c[key]) for c in cells)])
        widths.append(widest if cap is None else min(widest, max(cap, len(title))))
    titles = (title for title, _, _ in _TABLE_COLUMNS)
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for c in cells:
        parts = []
        for (_, key, _), w in zip(_TABLE_COLUMNS, widths, strict=True):
            text = clip(c[key], w)
            parts.append(text.rjust(w) if key == "seq" else text.ljust(w))
        lines.append("  ".join(parts).rstrip())
    head = rows[-1]["hash"] if rows else "-"
    lines.append(f"{len(rows)} record(s); last hash {head}")
    return "\n".join(lines) + "\n"


def _table_cells(r: Mapping[str, Any]) -> dict[str, str]:
    move = f"{r['from_state'] or '·'}→{r['to_state'] or '·'}" if r["from_state"] or r["to_state"] else ""
    at = str(r["at"])
    return {
        "seq": str(r["seq"]),
        "time": at[:10] + " " + at[11:23] if len(at) >= 23 else at,  # to the millisecond; JSON/CSV have µs
        "job": plain(r["job_id"] or "(run)"),
        "move": move,
        "trigger": plain(r["trigger"]),
        "remote": plain(r["remote_status"]),
        "outcome": plain(r["outcome"]),
        "worker": plain(r["worker"]),
    }


def verify_report(store: Store, run_id: str) -> dict[str, Any]:
    """The chain verification of one run as a JSON-ready dict."""
    v = store.verify(run_id)
    return {"run_id": v.run_id, "ok": v.ok, "records": v.records, "head_hash": v.head_hash,
            "broken_seq": v.broken_seq, "problem": v.problem}
