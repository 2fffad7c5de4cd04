"""The audit encoding written out field by field (the hot path) equals the json.dumps definition, byte for
byte, over random records: any text (quotes, controls, non-BMP), ints, datetimes in any zone, absent values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.store import audit


def reference(record: dict[str, Any]) -> bytes:
    doc: dict[str, Any] = {}
    for name in audit.CHAIN_FIELDS:
        value = record.get(name)
        doc[name] = audit.format_time(value) if isinstance(value, datetime) else value
    for name in audit.OPTIONAL_FIELDS:
        if record.get(name) is not None:
            doc[name] = record[name]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


texts = st.one_of(st.none(), st.text(), st.text(alphabet=st.characters(max_codepoint=0x20)),
                  st.sampled_from(['"', "\\", "\u2028", "\ud7ff", "\U0001f600", "é", "\x7f"]))
times = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5))]))
records = st.fixed_dictionaries({name: texts for name in (*audit.CHAIN_FIELDS, *audit.OPTIONAL_FIELDS)}).flatmap(
    lambda d: st.tuples(st.integers(min_value=-(2 ** 63), max_value=2 ** 63), times).map(
        lambda extra: {**d, "seq": extra[0], "at": extra[1]}))


@settings(max_examples=200, deadline=None)
@given(records)
def test_the_fast_encoding_is_the_json_definition(record: dict[str, Any]) -> None:
    assert audit.canonical(record) == reference(record)


@settings(max_examples=50, deadline=None)
@given(records, st.sets(st.sampled_from([*audit.CHAIN_FIELDS, *audit.OPTIONAL_FIELDS])))
def test_missing_keys_encode_as_absent(record: dict[str, Any], missing: set[str]) -> None:
    partial = {k: v for k, v in record.items() if k not in missing}
    assert audit.canonical(partial) == reference(partial)


SHARED = ("run_id", "at", "actor", "worker", "ticket", "reason")


@settings(max_examples=200, deadline=None)
@given(records, st.sets(st.sampled_from(SHARED)))
def test_the_per_commit_encoder_is_the_same_encoding(record: dict[str, Any], shared: set[str]) -> None:
    encode = audit.encoder({k: record.get(k) for k in shared})
    assert encode(record) == audit.canonical(record) == reference(record)
    # And again with other values for the fields that vary (one template, many records).
    other = {**record, "detail": "100% done %s %(x)s", "values": None, "seq": 1}
    assert encode(other) == reference(other)


@settings(max_examples=100, deadline=None)
@given(st.lists(records, min_size=2, max_size=8), st.sets(st.sampled_from(SHARED)))
def test_one_encoder_over_many_records_keeps_each_value_its_own(batch: list[dict[str, Any]],
                                                                 shared: set[str]) -> None:
    """One per-commit encoder over many records: records that share values, and values that are equal across
    types (1, 1.0, True), each encode as the definition says (nothing carried over from one record to the next)."""
    encode = audit.encoder({k: batch[0].get(k) for k in shared})
    batch = [*batch, *({**r, **{k: batch[0].get(k) for k in shared}} for r in batch)]
    for record in batch:
        if all(record.get(k) == batch[0].get(k) for k in shared):
            assert encode(record) == reference(record)
    for odd in (1, True, 1.0, "1", None, 1, "true"):
        record = {**batch[0], "detail": odd, "trigger": odd}
        assert encode(record) == reference(record), odd
