"""One typed settings object from flags > environment > config file > defaults.

pydantic (and the store's default URL) load when `Settings` is first used (PEP 562), not on import: the CLI reads
LANGUAGES and LOG_FORMATS from here for `--help`, which must start quickly.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError
from orchestrator.secrets import SECRET_AUTH_KEYS

if TYPE_CHECKING:
    from pydantic import BaseModel

    Settings = BaseModel  # to type checkers; the class itself is made on first use by _settings_class()

DEFAULT_CONFIG = Path("drs-teardown.toml")

# Environment variables that carry settings (secrets are read by orchestrator.drs.auth).
ENV = {
    "endpoint": "DRS_TEARDOWN_ENDPOINT",
    "project_id": "DRS_TEARDOWN_PROJECT_ID",
    "region": "DRS_TEARDOWN_REGION",
    "db": "DRS_TEARDOWN_DB",
    "iam_endpoint": "DRS_TEARDOWN_IAM_ENDPOINT",
    "claim_size": "DRS_TEARDOWN_CLAIM_SIZE",
    "lease_seconds": "DRS_TEARDOWN_LEASE_SECONDS",
    "language": "DRS_TEARDOWN_LANGUAGE",
    "log_format": "DRS_TEARDOWN_LOG_FORMAT",
    "bss_endpoint": "DRS_TEARDOWN_BSS_ENDPOINT",
}
CONFIG_FILE_CAP = 1024 * 1024  # bytes
TICKET_CAP = 255  # characters: the audit column's width (copied onto every record)
REASON_CAP = 4096  # characters
LANGUAGES = ("en-us", "zh-cn")
LOG_FORMATS = ("text", "json")


def _settings_class() -> type[BaseModel]:
    """Define Settings (on first use: pydantic costs a quarter of a second to import)."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    from orchestrator.store.db import DEFAULT_URL

    class Settings(BaseModel):
        """Everything a command needs; validated once."""

        __qualname__ = "Settings"

        model_config = ConfigDict(extra="forbid", validate_assignment=True)

        endpoint: str | None = None
        project_id: str | None = None
        region: str | None = None
        iam_endpoint: str | None = None
        db: str = DEFAULT_URL
        ca_bundle: str | None = None
        insecure_http: bool = False
        rate: float = Field(180.0, gt=0, description="calls per second per API")
        concurrency: int = Field(16, ge=1, le=256)
        batch_size: int = Field(100, ge=1, le=1000)
        poll_interval: float = Field(5.0, gt=0)
        stop_timeout: float = Field(1800.0, gt=0)
        delete_timeout: float = Field(600.0, gt=0)
        timeout: float = Field(6 * 3600.0, gt=0)
        claim_size: int = Field(100, ge=1, le=100_000)
        lease_seconds: float = Field(30.0, gt=0)
        force: bool = False
        no_force: bool = False
        record_breakpoint: bool = False
        unsubscribe_prepaid: bool = False  # a billing action: recorded as part of the consent
        bss_site: str | None = None  # cn | intl: where the BSS (billing) API is
        bss_endpoint: str | None = None
        max_targets: int | None = Field(None, ge=1)
        ticket: str | None = Field(None, max_length=TICKET_CAP)
        reason: str | None = Field(None, max_length=REASON_CAP)
        language: str = "en-us"
        log_format: str = "text"
        progress_interval: float = Field(10.0, gt=0)
        auth: dict[str, str] = Field(default_factory=dict)
        config_file: str | None = None

        @field_validator("project_id")
        @classmethod
        def _project(cls, value: str | None) -> str | None:
            if value is not None and (not value or not value.replace("-", "").isalnum() or len(value) > 64):
                raise ValueError(f"{value!r} is not a project id (the 32-hex id of the region's project)")
            return value

        @field_validator("language", "log_format")
        @classmethod
        def _choice(cls, value: str, info: Any) -> str:
            allowed = LANGUAGES if info.field_name == "language" else LOG_FORMATS
            value = value.strip().lower()
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
            return value

        @field_validator("bss_site")
        @classmethod
        def _site(cls, value: str | None) -> str | None:
            if value is not None and value.strip().lower() not in ("cn", "intl"):
                raise ValueError(f"{value!r} is not one of cn, intl")
            return value.strip().lower() if value is not None else None

        @field_validator("endpoint", "region", "iam_endpoint", "project_id", "bss_endpoint", mode="before")
        @classmethod
        def _strip(cls, value: Any) -> Any:
            # A value pasted with a trailing newline (DRS_TEARDOWN_ENDPOINT="$(cat url)\n") means the value.
            return value.strip() if isinstance(value, str) else value

    Settings.__module__ = __name__
    return Settings


def __getattr__(name: str) -> Any:  # PEP 562: `from orchestrator.config import Settings` defines it, once
    if name == "Settings":
        return globals().get("Settings") or globals().setdefault("Settings", _settings_class())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FILE_SECTIONS = {
    "drs": {"endpoint", "project_id", "region", "iam_endpoint", "ca_bundle", "insecure_http", "rate",
            "concurrency", "language", "bss_site", "bss_endpoint"},
    "database": {"url"},
    "run": {"batch_size", "poll_interval", "stop_timeout", "delete_timeout", "timeout", "force", "no_force",
            "record_breakpoint", "max_targets", "ticket", "reason", "claim_size", "lease_seconds",
            "unsubscribe_prepaid"},
    "output": {"log_format", "progress_interval"},
    "auth": {"token", "iam_user", "iam_password", "iam_domain", "iam_endpoint", "access_key", "secret_key",
             "security_token"},
}


def read_config_file(path: Path) -> dict[str, Any]:
    """Flatten a TOML config file into settings; every unknown key is reported at once, with a did-you-mean."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(CONFIG_FILE_CAP + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"--config {path}: is a directory, not a file") from exc
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > CONFIG_FILE_CAP:
        raise ConfigError(f"--config {path}: larger than {CONFIG_FILE_CAP // 1024} KiB")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from exc
    out: dict[str, Any] = {}
    problems: list[str] = []
    for section, values in raw.items():
        if section not in FILE_SECTIONS or not isinstance(values, dict):
            problems.append(f"unknown section [{section}]{_did_you_mean(section, list(FILE_SECTIONS), '[{}]')} "
                            f"(known: {', '.join(FILE_SECTIONS)})")
            continue
        for key, value in values.items():
            if key not in FILE_SECTIONS[section]:
                problems.append(f"unknown key {key!r} in [{section}]{_suggest_key(section, key)}")
            elif section == "auth":
                out.setdefault("auth", {})[key] = str(value)
            elif section == "database":
                out["db"] = value
            else:
                out[key] = value
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    if out.get("auth") and SECRET_AUTH_KEYS & out["auth"].keys():
        _check_private(path)
    return out


def _did_you_mean(word: str, choices: list[str], fmt: str = "{}") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


def _suggest_key(section: str, key: str) -> str:
    for other, keys in FILE_SECTIONS.items():
        if key in keys:
            return f" (it belongs in [{other}])"
    here = _did_you_mean(key, sorted(FILE_SECTIONS[section]))
    if here:
        return here
    everywhere = {k: sec for sec, keys in FILE_SECTIONS.items() for k in keys}
    close = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.6)
    return f" (did you mean {close[0]} in [{everywhere[close[0]]}]?)" if close else ""


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} holds secrets but is readable by others (mode {mode:o}): run chmod 600 {path}")


def load_settings(config: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """flags > environment > config file > defaults."""
    merged: dict[str, Any] = {}
    path = Path(config) if config else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None:
        merged.update(read_config_file(path))
        merged["config_file"] = str(path)
    for key, var in ENV.items():
        if env.get(var):
            merged[key] = env[var]
    merged.update({k: v for k, v in flags.items() if v is not None})
    from pydantic import ValidationError

    try:
        return __getattr__("Settings")(**merged)  # type: ignore[no-any-return]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            problems.append(f"setting {name}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from exc


def environment() -> dict[str, str]:
    return dict(os.environ)
