"""The audit hash chain: canonical encoding, tamper detection on a real run, the database's append-only rule.

Tampering is done as an attacker with write access to the SQLite file would: raw SQL, after dropping the
append-only triggers. `verify` must then fail and name the first broken record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from reportkit import Attacker, RealRun, copy_run, make_run, run_into
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from orchestrator.report import verify_report
from orchestrator.store import audit
from orchestrator.store.repo import Store, record_dict
from orchestrator.store.schema import AuditRecord

# -- canonical encoding (unit) -------------------------------------------------------------------------------

RUN = "0123456789abcdef0123456789abcdef"
KNOWN: dict[str, Any] = {
    "run_id": RUN, "seq": 7, "at": datetime(2026, 3, 1, 9, 30, 5, 123456, tzinfo=UTC),
    "job_id": "8f2bbba3-ae54-4ad6-987c-88bbdde8bcb9", "from_state": "deletable", "to_state": "deleting",
    "trigger": "delete", "remote_status": "RELEASE_RESOURCE_COMPLETE", "outcome": None, "error_code": None,
    "request_ids": "req-1,req-2",
    "actor": '{"credential":"aksk:HPUA…0000","host":"bastion","os_user":"jörg","tool":"drs-teardown 0.1.0"}',
    "worker": "bastion:4242:abcdef", "ticket": "CHG-1", "reason": "décommission", "detail": None,
    "prev_hash": "a" * 64,
}
# Computed once and pinned: if either changes, every stored trail in the world stops verifying.
KNOWN_CANONICAL = (
    '{"actor":"{\\"credential\\":\\"aksk:HPUA…0000\\",\\"host\\":\\"bastion\\",\\"os_user\\":\\"jörg\\",'
    '\\"tool\\":\\"drs-teardown 0.1.0\\"}","at":"2026-03-01T09:30:05.123456Z","detail":null,'
    '"error_code":null,'
    '"from_state":"deletable","job_id":"8f2bbba3-ae54-4ad6-987c-88bbdde8bcb9","outcome":null,"prev_hash":"'
    + "a" * 64 + '","reason":"décommission","remote_status":"RELEASE_RESOURCE_COMPLETE",'
    '"request_ids":"req-1,req-2","run_id":"0123456789abcdef0123456789abcdef","seq":7,"ticket":"CHG-1",'
    '"to_state":"deleting","trigger":"delete","worker":"bastion:4242:abcdef"}'
)
KNOWN_HASH = "bf680b256632dca78f677475c76939f5322a7d0057606b9887b5a2503b671c27"
KNOWN_GENESIS = "405490234a7ccb91767195cfcd2f508d5c0108e0da9788f290408b7d8c176678"


def test_canonical_encoding_is_pinned() -> None:
    assert audit.canonical(KNOWN) == KNOWN_CANONICAL.encode("utf-8")
    assert audit.record_hash(KNOWN) == KNOWN_HASH
    assert audit.genesis(RUN) == KNOWN_GENESIS


def test_canonical_encoding_ignores_key_order_extra_keys_and_the_hash_itself() -> None:
    shuffled = dict(reversed(list(KNOWN.items())))
    assert audit.record_hash(shuffled) == KNOWN_HASH
    assert audit.record_hash({**KNOWN, "hash": "f" * 64, "id": 99}) == KNOWN_HASH


def test_canonical_time_is_utc_whatever_the_zone_given() -> None:
    from datetime import timedelta, timezone

    plus8 = KNOWN["at"].astimezone(timezone(timedelta(hours=8)))
    assert audit.record_hash({**KNOWN, "at": plus8}) == KNOWN_HASH


def _changed(value: Any) -> Any:
    if value is None:
        return "x"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond + 1)
    return value[:-1] + ("0" if value[-1] != "0" else "1")


@pytest.mark.parametrize("field", audit.CHAIN_FIELDS)
def test_every_chain_field_is_covered(field: str) -> None:
    assert audit.record_hash({**KNOWN, field: _changed(KNOWN[field])}) != KNOWN_HASH


@pytest.mark.parametrize("field", [f for f in audit.CHAIN_FIELDS if KNOWN[f] is not None])
def test_absent_is_not_empty(field: str) -> None:
    # null and "" (or a missing key) must not collide for a field that has a value
    assert audit.record_hash({**KNOWN, field: None}) != KNOWN_HASH


def test_the_chain_covers_every_column_of_an_audit_record() -> None:
    # A column added to the table without being chained would be editable without trace.
    columns = set(AuditRecord.__table__.columns.keys())
    assert columns - set(audit.CHAIN_FIELDS) - set(audit.OPTIONAL_FIELDS) == {"id", "hash"}


def test_optional_values_are_hashed_only_when_present() -> None:
    # Absent (None or missing) encodes exactly as a record written before the field existed: old chains verify.
    assert audit.canonical({**KNOWN, "values": None}) == KNOWN_CANONICAL.encode("utf-8")
    assert audit.record_hash({**KNOWN, "values": None}) == KNOWN_HASH
    breakpoint_ = '{"gtid":"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5","incre_start_position":"mysql-bin.000003:154"}'
    with_values = {**KNOWN, "values": breakpoint_}
    assert audit.record_hash(with_values) != KNOWN_HASH
    assert audit.canonical(with_values).endswith(
        b'"trigger":"delete","values":' + json.dumps(breakpoint_, ensure_ascii=False).encode() +
        b',"worker":"bastion:4242:abcdef"}')
    # Editing the values of a record that has them breaks its hash; so does adding "{}" where there were none.
    assert audit.record_hash({**with_values, "values": breakpoint_.replace("154", "155")}) != \
        audit.record_hash(with_values)
    assert audit.record_hash({**KNOWN, "values": "{}"}) != KNOWN_HASH


def test_a_run_with_values_verifies_and_an_edited_value_is_named(tmp_path: Path) -> None:
    from orchestrator.store.repo import Context, Event
    from orchestrator.store.schema import Run

    url = f"sqlite:///{tmp_path / 'values.db'}"
    store = Store(url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    ctx = Context(actor={"os_user": "t"}, worker="w", ticket="CHG-1")
    run = Run(id=RUN, created_at=now, finished_at=None, status="planning", project_id="p", endpoint="e",
              selection={}, options={}, actor={}, ticket=None, reason=None, consent="test", plan_hash=None,
              exit_code=None, head_hash="")
    store.create_run(run, [], ctx, [Event(trigger="run_started")], now)
    store.append_events(RUN, ctx, [Event(trigger="breakpoint", job_id="j", values={"gtid": "g:1-5", "n": 2}),
                                   Event(trigger="note", detail="no values")], now)
    records = store.records(RUN)
    assert [r.values for r in records] == [None, '{"gtid":"g:1-5","n":2}', None]
    assert store.verify(RUN).ok
    store.close()
    with Attacker(tmp_path / "values.db") as attacker:
        attacker.drop_triggers()
        attacker.execute("UPDATE audit_records SET \"values\" = '{\"gtid\":\"g:1-6\",\"n\":2}' WHERE seq = 2", ())
    store = Store(url)
    v = store.verify(RUN)
    store.close()
    assert not v.ok and v.broken_seq == 2 and "edited" in (v.problem or "")


# -- a real run ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    return make_run(tmp_path_factory.mktemp("chain") / "base.db")


@pytest.fixture
def victim(base: RealRun, tmp_path: Path) -> Iterator[tuple[RealRun, Attacker]]:
    """A private copy of the run's database, and an attacker holding it open with its triggers dropped."""
    run = copy_run(base, tmp_path / "victim.db")
    with Attacker(run.path) as attacker:
        attacker.drop_triggers()
        yield run, attacker


def _verify(run: RealRun) -> audit.Verification:
    store = Store(run.url)
    try:
        return store.verify(run.run_id)
    finally:
        store.close()


def test_a_fresh_run_verifies(base: RealRun) -> None:
    store = Store(base.url)
    try:
        v = store.verify(base.run_id)
        run = store.run(base.run_id)
        records = store.records(base.run_id)
    finally:
        store.close()
    assert run is not None
    assert v.ok, v.problem
    assert v.records == len(records) == run.head_seq > 40
    assert v.head_hash == run.head_hash == records[-1].hash
    assert (v.broken_seq, v.problem) == (None, None)


def test_records_link_from_genesis_to_head(base: RealRun) -> None:
    store = Store(base.url)
    try:
        records = [record_dict(r) for r in store.records(base.run_id)]
    finally:
        store.close()
    prev = audit.genesis(base.run_id)
    for seq, rec in enumerate(records, 1):
        assert rec["seq"] == seq
        assert rec["prev_hash"] == prev
        assert rec["hash"] == audit.record_hash(rec)
        prev = rec["hash"]


def test_verify_report_of_a_fresh_run(base: RealRun) -> None:
    store = Store(base.url)
    try:
        report = verify_report(store, base.run_id)
        run = store.run(base.run_id)
    finally:
        store.close()
    assert run is not None
    assert report == {"run_id": base.run_id, "ok": True, "records": run.head_seq, "head_hash": run.head_hash,
                      "broken_seq": None, "problem": None}
    json.dumps(report)


# -- tampering -----------------------------------------------------------------------------------------------

EDITS = [
    ("to_state", "'deleted'"),
    ("remote_status", "'RELEASE_RESOURCE_COMPLETE'"),
    ("trigger", "'delete'"),
    ("ticket", "'CHG-999'"),
    ("reason", "'nothing to see'"),
    ("worker", "'someone-else:1:abcdef'"),
    ("actor", "replace(actor, 'root', 'mallory')"),
    ("at", "'2026-01-01 00:00:00.000000'"),
    ("job_id", "'00000000-0000-0000-0000-000000000000'"),
    ("request_ids", "'forged-request'"),
]


@pytest.mark.parametrize(("column", "value"), EDITS, ids=[c for c, _ in EDITS])
def test_an_edited_field_is_named(victim: tuple[RealRun, Attacker], column: str, value: str) -> None:
    run, attacker = victim
    k = 45
    assert attacker.execute(f"UPDATE audit_records SET {column} = {value} WHERE run_id = ? AND seq = ?",
                            (run.run_id, k)) == 1
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == k
    assert f"seq {k}" in (v.problem or "") and "edited" in (v.problem or "")
    assert v.records == k - 1


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    k = 45
    rec = attacker.record(run.run_id, k)
    rec["to_state"] = "deleted"
    rec["at"] = datetime.fromisoformat(rec["at"]).replace(tzinfo=UTC)
    attacker.execute("UPDATE audit_records SET to_state = ?, hash = ? WHERE run_id = ? AND seq = ?",
                     ("deleted", audit.record_hash(rec), run.run_id, k))
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == k + 1
    assert "prev_hash" in (v.problem or "")


def test_a_deleted_middle_record_is_named(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    k = 30
    assert attacker.execute("DELETE FROM audit_records WHERE run_id = ? AND seq = ?", (run.run_id, k)) == 1
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == k + 1  # the first record whose predecessor is missing
    assert f"seq {k} was expected" in (v.problem or "")


def test_a_truncated_tail_is_caught_by_the_run_head(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    n = attacker.count(run.run_id)
    assert attacker.execute("DELETE FROM audit_records WHERE run_id = ? AND seq = ?", (run.run_id, n)) == 1
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == n
    assert f"head says {n} records" in (v.problem or "")


def test_a_truncated_tail_with_a_forged_head_count_is_caught_by_the_head_hash(
        victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    n = attacker.count(run.run_id)
    attacker.execute("DELETE FROM audit_records WHERE run_id = ? AND seq = ?", (run.run_id, n))
    attacker.execute("UPDATE runs SET head_seq = ? WHERE id = ?", (n - 1, run.run_id))
    v = _verify(run)
    assert not v.ok
    assert "head hash" in (v.problem or "")


def _forge(attacker: Attacker, run: RealRun, seq: int, prev_hash: str, **fields: Any) -> dict[str, Any]:
    """A well-formed record with a correct hash of its own, chained to prev_hash."""
    template = attacker.record(run.run_id, 2)
    rec = {k: template[k] for k in audit.CHAIN_FIELDS}
    rec.update(seq=seq, prev_hash=prev_hash, at=datetime(2026, 1, 1, tzinfo=UTC), trigger="delete",
               from_state="deletable", to_state="deleting", detail="forged", **fields)
    rec["hash"] = audit.record_hash(rec)
    row = dict(rec, at="2026-01-01 00:00:00.000000")
    names = ", ".join(row)
    attacker.execute(f"INSERT INTO audit_records ({names}) VALUES ({', '.join('?' for _ in row)})",
                     list(row.values()))
    return rec


def test_a_forged_record_appended_at_the_tail_fails(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    n = attacker.count(run.run_id)
    last = attacker.record(run.run_id, n)
    _forge(attacker, run, n + 1, last["hash"])
    v = _verify(run)
    assert not v.ok
    assert f"head says {n} records, the trail has {n + 1}" in (v.problem or "")


def test_a_forged_record_inserted_in_the_middle_is_named(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    k = 20
    # Make room: shift seq k.. up by one (two steps, so UNIQUE(run_id, seq) never collides), fix the head.
    attacker.execute("UPDATE audit_records SET seq = seq + 1000000 WHERE run_id = ? AND seq >= ?",
                     (run.run_id, k))
    attacker.execute("UPDATE audit_records SET seq = seq - 999999 WHERE run_id = ? AND seq >= 1000000",
                     (run.run_id,))
    attacker.execute("UPDATE runs SET head_seq = head_seq + 1 WHERE id = ?", (run.run_id,))
    before = attacker.record(run.run_id, k - 1)
    _forge(attacker, run, k, before["hash"])
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == k + 1  # the forged record itself chains; the one after it no longer does
    assert "prev_hash" in (v.problem or "")


def test_two_swapped_records_are_named(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    k = 50
    attacker.execute("UPDATE audit_records SET seq = -1 WHERE run_id = ? AND seq = ?", (run.run_id, k))
    attacker.execute("UPDATE audit_records SET seq = ? WHERE run_id = ? AND seq = ?", (k, run.run_id, k + 1))
    attacker.execute("UPDATE audit_records SET seq = ? WHERE run_id = ? AND seq = -1", (k + 1, run.run_id))
    v = _verify(run)
    assert not v.ok
    assert v.broken_seq == k


def test_swapped_ids_with_seq_kept_still_verify(victim: tuple[RealRun, Attacker]) -> None:
    # Only seq orders the trail; the surrogate id is not evidence and may be anything.
    run, attacker = victim
    attacker.execute("UPDATE audit_records SET id = id + 100000 WHERE run_id = ?", (run.run_id,))
    assert _verify(run).ok


def test_a_full_rewrite_passes_locally_but_changes_the_head_hash(victim: tuple[RealRun, Attacker]) -> None:
    """What the chain alone cannot catch, and why `verify` prints the head hash to be anchored elsewhere."""
    run, attacker = victim
    anchored = _verify(run).head_hash
    n = attacker.count(run.run_id)
    prev = attacker.record(run.run_id, 9)["hash"]
    for seq in range(10, n + 1):
        rec = attacker.record(run.run_id, seq)
        rec["at"] = datetime.fromisoformat(rec["at"]).replace(tzinfo=UTC)
        if seq == 10:
            rec["ticket"] = "CHG-REWRITTEN"
        rec["prev_hash"] = prev
        prev = audit.record_hash(rec)
        attacker.execute("UPDATE audit_records SET ticket = ?, prev_hash = ?, hash = ? "
                         "WHERE run_id = ? AND seq = ?",
                         (rec["ticket"], rec["prev_hash"], prev, run.run_id, seq))
    attacker.execute("UPDATE runs SET head_hash = ? WHERE id = ?", (prev, run.run_id))
    v = _verify(run)
    assert v.ok
    assert v.head_hash != anchored


def test_verify_report_names_the_break(victim: tuple[RealRun, Attacker]) -> None:
    run, attacker = victim
    attacker.execute("UPDATE audit_records SET outcome = 'deleted' WHERE run_id = ? AND seq = 12",
                     (run.run_id,))
    store = Store(run.url)
    try:
        report = verify_report(store, run.run_id)
    finally:
        store.close()
    assert report["ok"] is False
    assert report["broken_seq"] == 12
    assert report["records"] == 11
    assert "seq 12" in report["problem"]


# -- the database refuses ------------------------------------------------------------------------------------

REFUSED = [
    "UPDATE audit_records SET ticket = 'x' WHERE run_id = :run",
    "DELETE FROM audit_records WHERE run_id = :run",
    "UPDATE api_calls SET http_status = 200 WHERE run_id = :run",
    "DELETE FROM api_calls WHERE run_id = :run",
]


@pytest.mark.parametrize("sql", REFUSED, ids=["update-audit", "delete-audit", "update-calls", "delete-calls"])
def test_the_database_refuses_update_and_delete(base: RealRun, tmp_path: Path, sql: str) -> None:
    run = copy_run(base, tmp_path / "intact.db")
    store = Store(run.url)
    try:
        refused = pytest.raises((IntegrityError, OperationalError), match="append-only")
        with refused, store.engine.begin() as conn:
            conn.execute(text(sql), {"run": run.run_id})
        assert store.verify(run.run_id).ok
        assert len(store.api_calls(run.run_id)) > 0
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_refuses_update_delete_and_truncate(pg_url: str) -> None:
    run_id, _ = run_into(pg_url, jobs=12)
    store = Store(pg_url)
    try:
        for sql in [*REFUSED, "TRUNCATE audit_records CASCADE", "TRUNCATE api_calls"]:
            with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
                conn.execute(text(sql), {"run": run_id})
        v = store.verify(run_id)
        assert v.ok, v.problem
        assert verify_report(store, run_id)["ok"] is True
    finally:
        store.close()
