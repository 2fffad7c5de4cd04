"""Secret hygiene: header masking, AK masking, the redacting log filter, config-file modes, argv refusal."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.errors import ConfigError
from orchestrator.secrets import (
    SECRET_ENV_VARS,
    SECRET_FLAG_NAMES,
    SENSITIVE_HEADERS,
    SecretRedactingFilter,
    check_secret_file,
    collect_secrets,
    mask_access_key,
    mask_headers,
    refuse_secret_in_argv,
)

TOKEN = "MIIsecret-token-value-0123456789"
PASSWORD = "Pa55-distinctive-word"

# -- headers and keys ----------------------------------------------------------------------------------------


def test_sensitive_headers_are_the_documented_set() -> None:
    assert {"x-auth-token", "authorization", "x-security-token", "x-subject-token", "cookie",
            "set-cookie"} == SENSITIVE_HEADERS


def test_mask_headers_masks_every_sensitive_header_case_insensitively() -> None:
    headers = httpx.Headers({"X-Auth-Token": TOKEN, "authorization": "SDK-HMAC-SHA256 Access=AK, Sig=ab",
                             "X-Security-Token": "st", "Cookie": "a=b", "Content-Type": "application/json",
                             "X-Request-Id": "req-1"})
    masked = mask_headers(headers)
    assert masked == {"x-auth-token": "***", "authorization": "***", "x-security-token": "***",
                      "cookie": "***", "content-type": "application/json", "x-request-id": "req-1"}


def test_mask_headers_takes_pairs_and_keeps_names() -> None:
    assert mask_headers([("X-Subject-Token", TOKEN), ("Set-Cookie", "s=1"), ("Host", "h")]) == {
        "X-Subject-Token": "***", "Set-Cookie": "***", "Host": "h"}


@pytest.mark.parametrize(("ak", "masked"), [
    ("HPUAEXAMPLEAK0000000", "HPUA" + "*" * 16),
    ("ABCDEFGHI", "ABCD*****"),
    ("SHORTKEY", "********"),
    ("", ""),
])
def test_mask_access_key(ak: str, masked: str) -> None:
    assert mask_access_key(ak) == masked


def test_collect_secrets_takes_only_secrets_from_env_and_file() -> None:
    env = {"DRS_TEARDOWN_IAM_PASSWORD": PASSWORD, "DRS_TEARDOWN_IAM_USER": "alice",
           "HUAWEICLOUD_SDK_AK": "AK"}
    file_values = {"secret_key": "file-sk-value", "access_key": "AKFILE", "token": ""}
    assert collect_secrets(env, file_values) == sorted([PASSWORD, "file-sk-value"])
    assert collect_secrets({}) == []


# -- the redacting filter ------------------------------------------------------------------------------------


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, SecretRedactingFilter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(extra_field)s"))
    redactor = SecretRedactingFilter([TOKEN, PASSWORD, "", "ab"])
    handler.addFilter(redactor)
    logger = logging.getLogger("test_secrets.redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, redactor
    logger.removeHandler(handler)


def test_filter_redacts_the_message_and_positional_args(
        logged: tuple[logging.Logger, io.StringIO, SecretRedactingFilter]) -> None:
    logger, stream, _ = logged
    logger.info(f"token is {TOKEN}", extra={"extra_field": "-"})
    logger.info("sent %s with %r", {"X-Auth-Token": TOKEN}, [PASSWORD], extra={"extra_field": "-"})
    out = stream.getvalue()
    assert TOKEN not in out and PASSWORD not in out
    assert "token is ***" in out
    assert "sent {'X-Auth-Token': '***'} with ['***']" in out


def test_filter_redacts_mapping_args_and_extras(
        logged: tuple[logging.Logger, io.StringIO, SecretRedactingFilter]) -> None:
    logger, stream, _ = logged
    logger.info("%(who)s used %(pw)s", {"who": "alice", "pw": PASSWORD},
                extra={"extra_field": {"headers": {"X-Auth-Token": TOKEN}}})
    out = stream.getvalue()
    assert "alice used ***" in out
    assert "{'headers': {'X-Auth-Token': '***'}}" in out
    assert TOKEN not in out and PASSWORD not in out


def test_filter_leaves_clean_records_structured() -> None:
    redactor = SecretRedactingFilter([TOKEN])
    record = logging.makeLogRecord({"msg": "batch %s of %d", "args": ("a", 3)})
    assert redactor.filter(record) is True
    assert record.args == ("a", 3)
    assert record.getMessage() == "batch a of 3"


def test_filter_redacts_tracebacks_and_ignores_tiny_secrets(
        logged: tuple[logging.Logger, io.StringIO, SecretRedactingFilter]) -> None:
    logger, stream, _ = logged
    try:
        raise RuntimeError(f"boom with {PASSWORD}")
    except RuntimeError:
        logger.exception("failed about ab", extra={"extra_field": "-"})
    out = stream.getvalue()
    assert PASSWORD not in out
    assert "boom with ***" in out
    # Two-letter strings are not treated as secrets: they would shred every log line.
    assert "failed about ab" in out


def test_filter_learns_secrets_at_run_time_longest_first() -> None:
    redactor = SecretRedactingFilter()
    record = logging.makeLogRecord({"msg": "token abcd-1234-efgh"})
    redactor.filter(record)
    assert record.getMessage() == "token abcd-1234-efgh"
    redactor.add("abcd")
    redactor.add("abcd-1234-efgh")
    assert redactor.redact("token abcd-1234-efgh and abcd") == "token *** and ***"


def test_filter_survives_a_broken_format_string() -> None:
    redactor = SecretRedactingFilter([TOKEN])
    record = logging.makeLogRecord({"msg": "%d " + TOKEN, "args": ("not a number",)})
    redactor.filter(record)
    assert TOKEN not in str(record.msg)


# -- config file modes ---------------------------------------------------------------------------------------


def _config(tmp_path: Path, body: str, mode: int) -> Path:
    path = tmp_path / "drs-teardown.toml"
    path.write_text(body, encoding="utf-8")
    path.chmod(mode)
    return path


SECRET_CONFIG = '[auth]\niam_user = "alice"\niam_password = "pw-in-file"\n'


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o610])
def test_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _config(tmp_path, SECRET_CONFIG, mode)
    with pytest.raises(ConfigError) as info:
        check_secret_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert "pw-in-file" not in message


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_secret_file_is_accepted(tmp_path: Path, mode: int) -> None:
    check_secret_file(_config(tmp_path, SECRET_CONFIG, mode))


@pytest.mark.parametrize("body", [
    '[auth]\niam_user = "alice"\niam_domain = "acme"\naccess_key = "AKONLY"\n',
    '[auth]\ntoken = ""\n',
    "region = 'cn-north-4'\n",
    "this is [not toml",
])
def test_world_readable_file_without_secrets_is_fine(tmp_path: Path, body: str) -> None:
    check_secret_file(_config(tmp_path, body, 0o644))


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_holds_secrets_can_be_forced(tmp_path: Path) -> None:
    path = _config(tmp_path, "anything", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        check_secret_file(path, holds_secrets=True)
    check_secret_file(path, holds_secrets=False)


# -- argv ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", sorted(SECRET_FLAG_NAMES))
@pytest.mark.parametrize("form", ["separate", "joined"])
def test_secret_flags_are_refused_by_name(flag: str, form: str) -> None:
    argv = ["run", flag, "s3cr3t-value"] if form == "separate" else ["run", f"{flag}=s3cr3t-value"]
    with pytest.raises(ConfigError) as info:
        refuse_secret_in_argv(argv)
    message = str(info.value)
    assert flag in message
    assert "s3cr3t-value" not in message
    assert "environment" in message and "0600" in message


@pytest.mark.parametrize("var", sorted(SECRET_ENV_VARS))
def test_env_style_assignments_are_refused(var: str) -> None:
    with pytest.raises(ConfigError, match=var) as info:
        refuse_secret_in_argv(["plan", "--all", f"{var}=s3cr3t-value"])
    assert "s3cr3t-value" not in str(info.value)


def test_refusal_points_at_the_right_variable() -> None:
    with pytest.raises(ConfigError, match="Set DRS_TEARDOWN_IAM_PASSWORD in the environment"):
        refuse_secret_in_argv(["--iam-password", "x"])
    with pytest.raises(ConfigError, match="--token"):
        refuse_secret_in_argv(["--TOKEN=x"])


@pytest.mark.parametrize("argv", [
    ["run", "--all", "--yes", "--tag", "env=prod", "--ticket", "CHG-1", "--reason", "password rotation"],
    ["plan", "9a470239-2308-4bb5-a6bc-1040402fjb21", "--name", "token-*"],
    ["--config", "drs-teardown.toml", "status"],
    ["run", "--tokens-file", "x"],
    ["run", "DRS_TEARDOWN_IAM_USER=alice"],
])
def test_ordinary_command_lines_pass(argv: list[str]) -> None:
    refuse_secret_in_argv(argv)
