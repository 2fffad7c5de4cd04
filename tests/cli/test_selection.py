"""Selection parsing as a table: the documented id shape, lower case, every bad line at once, jobs files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from orchestrator.errors import SelectionError
from orchestrator.selection import Selection, parse_job_ids, read_jobs_file

OK = "0a1b2c3d-4e5f-4a6b-8c7d-cb2c668jb201"  # the last group is alphanumeric, as documented ids are


@pytest.mark.parametrize("value, accepted", [
    (OK, True),
    (OK.upper(), True),
    ("656gbd72-0000-4000-8000-000000000000", False),  # non-hex in the first group
    ("0a1b2c3d-4e5f-4a6b-8c7z-cb2c668jb201", False),  # non-hex in the fourth group
    ("0a1b2c3d-4e5f-4a6b-8c7d-cb2c668jb20", False),  # 11 characters at the end
    ("0a1b2c3d4e5f4a6b8c7dcb2c668jb201", False),
    ("0a1b2c3d-4e5f-4a6b-8c7d-cb2c668jb2_1", False),
])
def test_the_documented_shape(value: str, accepted: bool) -> None:
    if accepted:
        assert parse_job_ids([value]) == [value.lower()]
    else:
        with pytest.raises(SelectionError, match="is not a DRS job id"):
            parse_job_ids([value])


def test_every_bad_line_is_reported_at_once_and_capped() -> None:
    with pytest.raises(SelectionError) as info:
        parse_job_ids(["x"] * 60 + [OK], source="f.txt")
    text = str(info.value)
    assert "f.txt line 1:" in text and "f.txt line 50:" in text and "f.txt line 51:" not in text
    assert "and 10 more" in text


def test_duplicates_and_case_collapse_to_one_id() -> None:
    assert parse_job_ids([OK, OK.upper(), f"  {OK}  # again"]) == [OK]


def test_jobs_file_from_stdin_bytes_and_a_file(tmp_path: Path) -> None:
    assert read_jobs_file("-", stdin=io.BytesIO(f"# c\n{OK}\r\n".encode())) == [OK]
    f = tmp_path / "ids.txt"
    f.write_text(f"{OK.upper()}\n")
    assert read_jobs_file(str(f)) == [OK]
    with pytest.raises(SelectionError, match="MiB"):
        read_jobs_file("-", stdin=io.BytesIO(b"x" * 101), cap=100)


def test_describe_names_the_filters() -> None:
    sel = Selection(name_glob="legacy-*", engine_type="mysqll", tags=(("env", "dev"),))
    assert sel.describe() == "--name 'legacy-*' --engine-type 'mysqll' --tag 'env=dev'"
    assert Selection.from_dict(sel.to_dict()) == sel
