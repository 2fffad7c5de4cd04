"""What the user asked for: job ids (arguments, jobs files), filters, and targets files. Pure: no I/O but reads.

Every malformed input is reported at once, naming the argument, file and line; nothing is sent before.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.drs.codes import ALL_STATUSES
from orchestrator.drs.models import DB_USE_TYPES
from orchestrator.errors import SelectionError

# The documented shape (reference §3): 8-4-4-4 hex, then 12 alphanumerics (ids like `…-cb2c668jb201`),
# compared and sent in lower case.
JOB_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-z]{12}$")
JOBS_FILE_CAP = 8 * 1024 * 1024  # bytes: far more ids than any project holds
TARGETS_FILE_CAP = 1024 * 1024
MAX_REPORTED = 50  # malformed lines listed in one message (the count says how many more)
TARGET_KEYS = frozenset({"label", "region", "endpoint", "project_id", "jobs", "jobs_file", "all", "name",
                         "status", "db_use_type", "engine_type", "tags"})


@dataclass(frozen=True)
class Selection:
    """What the user asked for: ids and/or filters over the list API."""

    job_ids: tuple[str, ...] = ()
    all: bool = False
    name_glob: str | None = None
    status: str | None = None
    db_use_type: str | None = None
    engine_type: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def uses_filters(self) -> bool:
        return bool(self.all or self.name_glob or self.status or self.db_use_type or self.engine_type or self.tags)

    def validate(self) -> None:
        if not self.job_ids and not self.uses_filters:
            raise SelectionError("nothing selected: give job ids, --jobs-file, or a filter (--all, --name, ...)")
        if self.status and self.status not in ALL_STATUSES:
            raise SelectionError(f"--status {self.status!r} is not a DRS task status; valid: "
                                 f"{', '.join(ALL_STATUSES)}")
        if self.db_use_type and self.db_use_type not in DB_USE_TYPES:
            raise SelectionError(f"--db-use-type {self.db_use_type!r} must be one of {', '.join(DB_USE_TYPES)}")

    def describe(self) -> str:
        """The selection as the options that made it, e.g. `--name 'legacy-*' --engine-type 'mysql'`."""
        parts = [f"{len(self.job_ids)} job id(s)"] if self.job_ids else []
        parts += ["--all"] if self.all else []
        for flag, value in (("--name", self.name_glob), ("--status", self.status),
                            ("--db-use-type", self.db_use_type), ("--engine-type", self.engine_type)):
            if value:
                parts.append(f"{flag} {value!r}")
        parts += [f"--tag '{k}={v}'" for k, v in self.tags]
        return " ".join(parts) or "(nothing)"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        return cls(job_ids=tuple(d.get("job_ids") or ()), all=bool(d.get("all")), name_glob=d.get("name_glob"),
                   status=d.get("status"), db_use_type=d.get("db_use_type"), engine_type=d.get("engine_type"),
                   tags=tuple((str(k), str(v)) for k, v in (d.get("tags") or ())))


def normalise_status(value: str | None) -> str | None:
    """Statuses are accepted in any case (`--status pausing`); the service's are upper case."""
    return value.strip().upper() if value else value


def parse_job_ids(values: Iterable[str], source: str = "argument") -> list[str]:
    """Validate ids before any API call; every malformed one is reported at once, naming its argument or line."""
    ids: list[str] = []
    seen: set[str] = set()
    problems: list[str] = []
    for n, raw in enumerate(values, start=1):
        value = raw.split("#", 1)[0].strip().lower()
        if not value:
            continue
        if not JOB_ID_RE.match(value):
            where = f"{source} line {n}" if source != "argument" else f"argument {n}"
            shown = raw.split("#", 1)[0].strip()
            problems.append(f"{where}: {shown[:80]!r} is not a DRS job id "
                            "(expected 8-4-4-4 hex digits, then 12 letters or digits)")
            continue
        if value not in seen:
            seen.add(value)
            ids.append(value)
    if problems:
        more = len(problems) - MAX_REPORTED
        raise SelectionError("\n".join(problems[:MAX_REPORTED] + ([f"... and {more} more"] if more > 0 else [])))
    return ids


def parse_tag(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise SelectionError(f"--tag {value!r}: expected KEY=VALUE")
    return key, val


def _read_capped(stream: IO[bytes], cap: int, name: str) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise SelectionError(f"{name}: larger than {cap // (1024 * 1024)} MiB; nothing was sent")
    return data


def _regular_file(path: Path, name: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise SelectionError(f"{name}: no such file") from exc
    except OSError as exc:
        raise SelectionError(f"{name}: cannot read it ({exc.strerror})") from exc
    if stat.S_ISDIR(mode):
        raise SelectionError(f"{name}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise SelectionError(f"{name}: not a regular file (give a file, or - for stdin)")


def decode_lines(data: bytes, name: str) -> list[str]:
    """UTF-8 lines; an undecodable line is named."""
    lines: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise SelectionError(f"{name} line {n}: not UTF-8 text (byte {exc.start + 1}); nothing was sent") \
                from exc
    return lines


def read_jobs_file(path: str, *, stdin: IO[bytes] | None = None, cap: int = JOBS_FILE_CAP,
                   flag: str = "--jobs-file") -> list[str]:
    """The ids of a jobs file (one a line, `#` comments; `-` = stdin): a regular file under the cap, UTF-8."""
    if path == "-":
        name = f"{flag} - (stdin)"
        stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream without a buffer (some test runners)
            data = sys.stdin.read(cap + 1).encode("utf-8", "surrogateescape")
            if len(data) > cap:
                raise SelectionError(f"{name}: larger than {cap // (1024 * 1024)} MiB; nothing was sent")
        else:
            data = _read_capped(stream, cap, name)
    else:
        name = f"{flag} {path}"
        _regular_file(Path(path), name)
        try:
            with open(path, "rb") as fh:
                data = _read_capped(fh, cap, name)
        except OSError as exc:
            raise SelectionError(f"{name}: cannot read it ({exc.strerror})") from exc
    ids = parse_job_ids(decode_lines(data, name), source=name)
    if not ids:
        raise SelectionError(f"{name}: no job ids in it (only blank lines or comments); nothing was sent")
    return ids


# -- targets files (issue 15): one run over several projects and regions ----------------------------------------


@dataclass(frozen=True)
class Target:
    """One project in one region (or at one endpoint), and what to select there."""

    label: str
    project_id: str
    selection: Selection
    region: str | None = None
    endpoint: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "project_id": self.project_id, "region": self.region,
                "endpoint": self.endpoint, "selection": self.selection.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Target:
        return cls(label=d["label"], project_id=d["project_id"], region=d.get("region"),
                   endpoint=d.get("endpoint"), selection=Selection.from_dict(d.get("selection") or {}))


def _str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SelectionError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _target(index: int, table: Any, base: Path, source: str) -> Target:
    where = f"{source}: target {index}"
    if not isinstance(table, dict):
        raise SelectionError(f"{where}: expected a [[target]] table")
    if isinstance(table.get("label"), str):
        where += f" ({table['label']})"
    unknown = sorted(set(table) - TARGET_KEYS)
    if unknown:
        raise SelectionError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(TARGET_KEYS))})")
    if "project_id" not in table:
        raise SelectionError(f"{where}: project_id is required")
    if "region" not in table and "endpoint" not in table:
        raise SelectionError(f"{where}: give region or endpoint")
    project_id = _str(table["project_id"], "project_id", where)
    region = _str(table["region"], "region", where) if "region" in table else None
    endpoint = _str(table["endpoint"], "endpoint", where) if "endpoint" in table else None
    ids: list[str] = []
    if "jobs" in table:
        if not isinstance(table["jobs"], list) or not all(isinstance(j, str) for j in table["jobs"]):
            raise SelectionError(f"{where}: jobs must be a list of job id strings")
        ids += parse_job_ids(table["jobs"], source=f"{where} jobs")
    if "jobs_file" in table:
        file = base / _str(table["jobs_file"], "jobs_file", where)
        ids += [i for i in read_jobs_file(str(file), flag=f"{where} jobs_file") if i not in ids]
    tags = table.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise SelectionError(f"{where}: tags must be a table of strings, e.g. tags = {{env = \"dev\"}}")
    if "all" in table and not isinstance(table["all"], bool):
        raise SelectionError(f"{where}: all must be true or false")
    selection = Selection(job_ids=tuple(ids), all=bool(table.get("all")),
                          name_glob=_str(table["name"], "name", where) if "name" in table else None,
                          status=normalise_status(_str(table["status"], "status", where))
                          if "status" in table else None,
                          db_use_type=_str(table["db_use_type"], "db_use_type", where)
                          if "db_use_type" in table else None,
                          engine_type=_str(table["engine_type"], "engine_type", where)
                          if "engine_type" in table else None,
                          tags=tuple(sorted((str(k), v) for k, v in tags.items())))
    try:
        selection.validate()
    except SelectionError as exc:
        raise SelectionError(f"{where}: {exc}") from exc
    label = _str(table["label"], "label", where) if "label" in table else f"{region or endpoint}/{project_id[:8]}"
    return Target(label=label, project_id=project_id, selection=selection, region=region, endpoint=endpoint)


def parse_targets_file(path: str) -> list[Target]:
    """A TOML file of `[[target]]` tables; the keys are the contract and unknown ones are refused."""
    name = f"--targets {path}"
    _regular_file(Path(path), name)
    with open(path, "rb") as fh:
        data = _read_capped(fh, TARGETS_FILE_CAP, name)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SelectionError(f"{name}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SelectionError(f"{name}: not valid TOML ({exc})") from exc
    extra = sorted(set(raw) - {"target"})
    if extra:
        raise SelectionError(f"{name}: unknown top-level key(s) {', '.join(map(repr, extra))} "
                             "(only [[target]] tables)")
    tables = raw.get("target")
    if not isinstance(tables, list) or not tables:
        raise SelectionError(f"{name}: no [[target]] tables")
    base = Path(path).resolve().parent
    targets = [_target(n, t, base, name) for n, t in enumerate(tables, start=1)]
    labels = [t.label for t in targets]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SelectionError(f"{name}: label(s) used twice: {', '.join(dupes)}")
    places = [(t.endpoint or t.region, t.project_id) for t in targets]
    if len(set(places)) != len(places):
        raise SelectionError(f"{name}: the same project at the same region/endpoint appears twice; merge them")
    return targets
