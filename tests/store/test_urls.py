"""Any legal database URL works; a path or a dropped option is refused; no password is ever shown."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from orchestrator.errors import ConfigError, StoreError
from orchestrator.store import base
from orchestrator.store.repo import Store
from orchestrator.store.urls import display, parse_url, scrub
from tests.store.kit import record_run

ODD = "odd %b @at :colon #hash sp ace"
PASSWORD = "p@ss%w:rd/#?& é"


@pytest.mark.parametrize("spell", ["raw", "escaped"])
def test_a_sqlite_path_with_odd_characters_works(tmp_path: Path, spell: str) -> None:
    folder = tmp_path / ODD
    folder.mkdir()
    # Raw, a '%' not followed by two hex digits is itself; escaped, '%25' is a '%'.
    path = folder / "tear down%zz.db" if spell == "raw" else folder / "tear down%41%.db"
    written = str(path) if spell == "raw" else quote(str(path), safe="/")
    url = f"sqlite:///{written}"
    store = Store(url)
    run_id = record_run(store, jobs=2)
    store.close()
    assert sorted(os.listdir(folder)) == [path.name]  # that file, no other
    again = Store(url)
    assert again.verify(run_id).ok and len(again.tasks(run_id)) == 2
    again.close()


@pytest.mark.parametrize("raw", ["x.db", "./data/x.db", "/var/lib/x.db"])
def test_a_bare_path_is_a_config_error_with_the_url_hint(tmp_path: Path, raw: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Store(raw)
    assert caught.value.exit_code == 1
    assert f"sqlite:///{raw}" in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("suffix", "named"), [("run?1.db", "'1.db'"), ("x.db?mode=ro&timeout=3", "'mode', 'timeout'")])
def test_sqlite_options_the_store_would_drop_are_refused(tmp_path: Path, suffix: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Store(f"sqlite:///{tmp_path}/{suffix}")
    assert named in str(caught.value) and "%3F" in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("raw", ["postgresql://drs:hunter2@xyzzy@db.example/x", "postgresql://drs:hunter2@xy/zzy@db.example/x",
                                 "postgresql://drs@xyzzy:hunter2@db.example/x"])
def test_an_unescaped_at_in_a_password_is_refused_and_never_shown(raw: str) -> None:
    """make_url ends the password at the first '@' and takes the rest for the host: shown in every message."""
    with pytest.raises(ConfigError) as caught:
        parse_url(raw)
    for shown in (str(caught.value), display(raw)):
        assert "hunter2" not in shown and "xy" not in shown
        assert "***@db.example/x" in shown
    assert "%40" in str(caught.value)
    assert display("sqlite:///a@b@c/x.db") == "sqlite:///a%40b%40c/x.db" and parse_url("sqlite:///a@b@c/x.db")


def test_other_databases_and_drivers_are_config_errors() -> None:
    for url, says in [("mysql://u@h/db", "unsupported"), ("postgresql+asyncpg://h/db", "psycopg"),
                      ("sqlite+pysqlcipher:///x.db", "not supported"), ("sqlite://host/x.db", "not a host"),
                      ("", "empty")]:
        with pytest.raises(ConfigError, match=says):
            parse_url(url)


def test_postgres_spellings_become_psycopg() -> None:
    for url in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert parse_url(url).drivername == "postgresql+psycopg"


def test_display_and_scrub_never_leave_the_password() -> None:
    url = parse_url(f"postgresql://drs:{quote(PASSWORD, safe='')}@db.example:5432/teardown")
    assert url.password == PASSWORD
    assert display(url) == "postgresql+psycopg://drs:***@db.example:5432/teardown"
    message = f"failed for {PASSWORD} and {quote(PASSWORD, safe='')} and {quote(PASSWORD)}"
    assert PASSWORD not in scrub(message, url) and "p%40ss" not in scrub(message, url)
    assert "secret" not in display("not a url://u:secret@h")


def test_no_empty_file_is_left_when_opening_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_engine: object) -> None:
        raise RuntimeError("migration failed")

    monkeypatch.setattr(base, "upgrade", broken)
    with pytest.raises(StoreError, match="migration failed"):
        Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert os.listdir(tmp_path) == []
    # A file that was there before is never removed.
    (tmp_path / "old.db").write_bytes(b"")
    with pytest.raises(StoreError):
        Store(f"sqlite:///{tmp_path / 'old.db'}")
    assert os.listdir(tmp_path) == ["old.db"]


def test_a_missing_folder_is_a_store_error_that_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    assert os.listdir(tmp_path) == []


@pytest.mark.postgres
def test_a_percent_escaped_postgres_password_works_and_is_never_shown(pg_url: str) -> None:
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    role = "drs_odd_pw"
    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    try:
        host_db = pg_url.split("@", 1)[1]
        url = f"postgresql+psycopg://{role}:{quote(PASSWORD, safe='')}@{host_db}"
        store = Store(url)
        run_id = record_run(store, jobs=1)
        assert store.verify(run_id).ok
        assert PASSWORD not in store.url and quote(PASSWORD, safe="") not in store.url and "***" in store.url
        store.close()
        # A server that does not answer: the error names the database, never the password in any spelling.
        refused = f"postgresql+psycopg://{role}:{quote(PASSWORD, safe='')}@127.0.0.1:1/x"
        with pytest.raises(StoreError) as caught:
            Store(refused)
        text = str(caught.value)
        for form in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), "p@ss"):
            assert form not in text
        assert "127.0.0.1" in text
    finally:
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
