"""Logging for the CLI: stderr only, secrets masked, text or one JSON object per line (python-json-logger)."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from orchestrator.secrets import SecretRedactingFilter, collect_secrets

# The run a command works, stamped on every log line (JSON: run_id, worker).
LOG_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "drs_teardown_log", default=MappingProxyType({}))
JSON_FIELDS = ("run_id", "job_id", "worker", "method", "path", "status", "request_id", "counts", "total", "done",
               "elapsed_s")
# What the CLI tells the operator; with --log-format json it is a log line like any other, shown at any -v.
say_log = logging.getLogger("drs_teardown.say")
say_log.setLevel(logging.INFO)


class ContextFilter(logging.Filter):
    """Adds the command's run id and worker (and empty request fields) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in LOG_CONTEXT.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        _request_fields(record)
        return True


def _request_fields(record: logging.LogRecord) -> None:
    """The client's request/response lines as fields (method, path, status, request_id), unless it sent them."""
    args = record.args if isinstance(record.args, tuple) else ()
    if getattr(record, "method", None) is not None or not record.name.startswith("drs_teardown"):
        return
    if record.msg == "response %s %s -> %s request_id=%s" and len(args) == 4:
        record.method, record.path, record.status, record.request_id = args
    elif isinstance(record.msg, str) and record.msg.startswith("request %s %s") and len(args) >= 2:
        record.method, record.path = args[0], args[1]


def _json_formatter() -> logging.Formatter:
    """The JSON formatter (python-json-logger, imported only for --log-format json)."""
    from pythonjsonlogger.json import JsonFormatter

    class _Json(JsonFormatter):
        def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord,
                       message_dict: dict[str, Any]) -> None:
            super().add_fields(log_record, record, message_dict)
            log_record["time"] = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
            log_record["level"] = record.levelname.lower()
            log_record["event"] = log_record.pop("message", record.getMessage())
            log_record["logger"] = record.name
            for key in JSON_FIELDS:
                value = getattr(record, key, None)
                if value is not None:
                    log_record[key] = value

    return _Json(json_ensure_ascii=False)


def setup_logging(verbose: int, env: Mapping[str, str], log_format: str = "text",
                  auth_file: Mapping[str, str] | None = None,
                  redactor: SecretRedactingFilter | None = None) -> SecretRedactingFilter:
    """One stderr handler with the redacting filter; -v INFO (requests), -vv DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = _json_formatter()
        formatter.converter = time.gmtime  # UTC, as the trail
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    redactor = redactor or SecretRedactingFilter(collect_secrets(env, auth_file))
    handler.addFilter(ContextFilter())
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    # httpx logs the request line only (no headers) at INFO; our client logs masked headers.
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("httpcore", "transitions", "alembic", "sqlalchemy", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    say_log.setLevel(logging.INFO)
    # Python warnings go through logging, shown only at -vv: no warning reaches a user unasked.
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)
    return redactor
