"""Database URLs: parsed once, checked, shown without their password, and scrubbed out of driver errors.

Any legal URL works: percent signs, `@`, `:`, `#` and spaces in SQLite paths (written as is or percent-escaped),
percent-escaped PostgreSQL passwords. The parsed `URL` object is what the engine and Alembic get, never a
string that something would parse again (Alembic's ConfigParser reads `%` as interpolation).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from orchestrator.errors import ConfigError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def parse_url(raw: str) -> URL:
    """The URL `raw` names, for SQLite or PostgreSQL (psycopg 3); ConfigError (exit 1) naming what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError("--db: empty database URL (e.g. sqlite:///./drs-teardown.db)")
    if not _SCHEME.match(raw):
        raise ConfigError(f"--db: {raw!r} is a path, not a database URL; write sqlite:///{raw}")
    if _extra_at(raw):
        # make_url would end the password at its first '@' and show the rest as the host, in every message.
        raise ConfigError(f"--db: more than one '@' before the host in {display(raw)}; an '@' in a user name or "
                          "password is written %40")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"--db: not a database URL: {display(raw)}") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _check_sqlite(raw, url)
    if backend == "postgresql":
        if url.drivername != "postgresql+psycopg":
            raise ConfigError(f"--db: driver {url.drivername!r} is not supported; use postgresql+psycopg://")
        return url
    raise ConfigError(f"--db: unsupported database {backend!r} in {display(raw)} (use sqlite or postgresql)")


def _check_sqlite(raw: str, url: URL) -> URL:
    if url.drivername != "sqlite":
        raise ConfigError(f"--db: driver {url.drivername!r} is not supported; use sqlite:///PATH")
    # SQLAlchemy drops a query option without a value ('…/run?1.db' names the file 'run'): look at the text.
    _, sep, query = raw.partition("?")
    if sep:
        names = [k for k, _ in parse_qsl(query, keep_blank_values=True)] or [query]
        raise ConfigError(f"--db: the SQLite store takes no URL options, but {display(raw)} has "
                          f"{', '.join(repr(n) for n in names)}; a '?' in a file name is written %3F")
    if url.host or url.username or url.password or url.port:
        raise ConfigError(f"--db: a SQLite URL names a file, not a host: {display(raw)} "
                          "(sqlite:///relative/path.db or sqlite:////absolute/path.db)")
    if not url.database:
        raise ConfigError("--db: a SQLite URL needs a file: sqlite:///PATH")
    return url


def _extra_at(raw: str) -> bool:
    """More than one '@' in the part of a server URL that holds user, password and host (not the query)."""
    match = _SCHEME.match(raw)
    head = raw[match.end():].partition("?")[0] if match else ""
    return not head.startswith("/") and head.count("@") > 1


def display(url: URL | str) -> str:
    """The URL as shown to a user: never its password."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    if _extra_at(url):  # an unescaped '@' in the password: everything before the last '@' goes
        scheme = _SCHEME.match(url)
        assert scheme is not None
        head, sep, query = url[scheme.end():].partition("?")
        return f"{url[:scheme.end()]}***{head[head.rfind('@'):]}{sep}{query}"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparseable: drop anything between '://' and '@' that could be credentials.
        return re.sub(r"(://[^/@]*:)[^/@]*@", r"\1***@", url)


def scrub(text: str, url: URL | None) -> str:
    """`text` (a driver's message, say) with the URL's password in any of its spellings replaced by ***."""
    if url is None or not url.password:
        return text
    password = str(url.password)
    for form in {password, quote(password, safe=""), quote_plus(password), quote(password)}:
        if form:
            text = text.replace(form, "***")
    return text


def sqlite_path(url: URL) -> str | None:
    """The file a SQLite URL names (None for an in-memory database)."""
    database = url.database
    if not database or database == ":memory:":
        return None
    return database
