"""Secret hygiene: what counts as a secret, and guards that keep secrets out of logs, argv and loose files.

Used by the CLI (argv and config-file checks), logging (header masking, the redacting filter) and the store
(credential identities only, never a secret).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

MASK = "***"
SENSITIVE_HEADERS = frozenset(
    {"x-auth-token", "authorization", "x-security-token", "x-subject-token", "cookie", "set-cookie"}
)

# [auth] table key -> environment variable; the same names the official SDK and DESIGN.md §2 use.
AUTH_ENV_VARS: Mapping[str, str] = {
    "token": "DRS_TEARDOWN_AUTH_TOKEN",
    "iam_user": "DRS_TEARDOWN_IAM_USER",
    "iam_password": "DRS_TEARDOWN_IAM_PASSWORD",
    "iam_domain": "DRS_TEARDOWN_IAM_DOMAIN",
    "iam_endpoint": "DRS_TEARDOWN_IAM_ENDPOINT",
    "access_key": "HUAWEICLOUD_SDK_AK",
    "secret_key": "HUAWEICLOUD_SDK_SK",
    "security_token": "HUAWEICLOUD_SDK_SECURITY_TOKEN",
}
# The keys whose values are secrets; the others (user, domain, endpoint, AK) are identities.
SECRET_AUTH_KEYS = frozenset({"token", "iam_password", "secret_key", "security_token"})
SECRET_ENV_VARS = frozenset(AUTH_ENV_VARS[key] for key in SECRET_AUTH_KEYS)

# Flags someone might try to pass a secret with, mapped to where the secret belongs instead.
SECRET_FLAG_NAMES: Mapping[str, str] = {
    "--token": "DRS_TEARDOWN_AUTH_TOKEN",
    "--auth-token": "DRS_TEARDOWN_AUTH_TOKEN",
    "--password": "DRS_TEARDOWN_IAM_PASSWORD",
    "--iam-password": "DRS_TEARDOWN_IAM_PASSWORD",
    "--sk": "HUAWEICLOUD_SDK_SK",
    "--secret-key": "HUAWEICLOUD_SDK_SK",
    "--security-token": "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "--ak-sk": "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK",
}
# Shorter strings would redact ordinary words from every log line; no real credential is that short.
MIN_SECRET_LENGTH = 4
# Only the owner may read a file that holds secrets.
GROUP_OTHER_BITS = 0o077
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# scheme://user:PASSWORD@host: masked up to the last '@' before the host (a password written with an unescaped
# '@' is masked whole).
URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s/]+)@")


def mask_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it (scheme://user:password@…) replaced by '***'."""
    return URL_PASSWORD.sub(r"\1***@", text)


def mask_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """A copy of the headers, fit to log: every sensitive value replaced by '***'."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name: MASK if name.lower() in SENSITIVE_HEADERS else value for name, value in items}


def mask_access_key(access_key: str) -> str:
    """The AK with all but its first 4 characters masked (all of it when it is too short to spare 4)."""
    keep = 4 if len(access_key) > 2 * 4 else 0
    return access_key[:keep] + "*" * (len(access_key) - keep)


def collect_secrets(env: Mapping[str, str], file_values: Mapping[str, str] | None = None) -> list[str]:
    """Every configured secret value (environment and [auth] table), to seed a SecretRedactingFilter."""
    values = [env.get(name, "") for name in SECRET_ENV_VARS]
    values += [str((file_values or {}).get(key, "")) for key in SECRET_AUTH_KEYS]
    return sorted({v for v in values if v})


class SecretRedactingFilter(logging.Filter):
    """Replace every known secret in a log record (message, args, extras, traceback) with '***'."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Also redact this secret from now on (e.g. an IAM token fetched at run time)."""
        if len(secret) < MIN_SECRET_LENGTH or secret in self._secrets:
            return
        self._secrets.add(secret)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        """The text with every known secret replaced by '***'."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def _leaks(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(text) is not None

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if self._pattern is None:
            return True
        self._redact_message(record)
        self._redact_extras(record)
        self._redact_traceback(record)
        return True

    def _redact_message(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A broken format string: logging reports it later; redact the raw parts instead.
            message = f"{record.msg} {record.args}"
        if self._leaks(message):
            # Render once, then drop the args: a secret inside a dict or object arg has no other safe form.
            record.msg = self.redact(message)
            record.args = None

    def _redact_extras(self, record: logging.LogRecord) -> None:
        for name, value in list(vars(record).items()):
            if name in _STANDARD_RECORD_ATTRS:
                continue
            rendered = value if isinstance(value, str) else repr(value)
            if self._leaks(rendered):
                setattr(record, name, self.redact(rendered))

    def _redact_traceback(self, record: logging.LogRecord) -> None:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self._leaks(record.exc_text):
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info and self._leaks(record.stack_info):
            record.stack_info = self.redact(record.stack_info)


def _auth_table_holds_secrets(path: Path) -> bool:
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The config loader reports an unreadable file with its own error; nothing is used from it.
        return False
    table = document.get("auth")
    return isinstance(table, dict) and any(table.get(key) for key in SECRET_AUTH_KEYS)


def check_secret_file(path: str | os.PathLike[str], *, holds_secrets: bool | None = None) -> None:
    """Refuse a file that holds secrets (by default: any in its [auth] table) and is readable by others."""
    file = Path(path)
    if os.name == "nt":
        # POSIX modes mean nothing there; NTFS ACLs are out of scope.
        return
    if holds_secrets is None:
        holds_secrets = _auth_table_holds_secrets(file)
    if not holds_secrets:
        return
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & GROUP_OTHER_BITS:
        raise ConfigError(
            f"{file} holds secrets but its mode is {mode:04o} (group or others may access it): "
            f"run `chmod 600 {file}`"
        )


def _secret_flag(arg: str) -> str | None:
    """The secret-carrying flag or VAR= name in one argv element, if any."""
    if arg.startswith("--"):
        name = arg.split("=", 1)[0].lower()
        return name if name in SECRET_FLAG_NAMES else None
    name, sep, _ = arg.partition("=")
    return name if sep and name in SECRET_ENV_VARS else None


def refuse_secret_in_argv(argv: Sequence[str]) -> None:
    """Raise ConfigError naming the first flag (not its value) that would put a secret on the command line."""
    for arg in argv:
        name = _secret_flag(arg)
        if name is None:
            continue
        where = SECRET_FLAG_NAMES.get(name, name)
        raise ConfigError(
            f"refusing {name} on the command line: other users can read command lines (ps, shell history). "
            f"Set {where} in the environment, or put it in the [auth] table of a config file with mode 0600"
        )
