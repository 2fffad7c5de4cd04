"""Fixtures for orchestrator tests. PostgreSQL tests get a fresh database each, or a clear skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("DRS_TEARDOWN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_pg_problem: str | None = None


def _pg_available() -> str | None:
    """None when the server answers, else why not."""
    global _pg_problem
    if _pg_problem is None:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
                _pg_problem = ""
        except Exception as exc:
            _pg_problem = f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc.__class__.__name__}: {exc})"
    return _pg_problem or None


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'drs-teardown.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI must have PostgreSQL running (.ci/run starts it)")
        pytest.skip(f"{problem}. Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    import psycopg

    name = f"drs_test_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
