"""Request-body validation for the DRS calls: strict, with the documented error codes (400s)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from orchestrator.drs.codes import ALL_STATUSES

from .batch_rules import DELETE_TYPES
from .jobs import DB_USE_TYPES

# The documented shape of a job id: 8-4-4-4 hex, then 12 alphanumerics (ids like ...-cb2c668jb201, HW-DEL).
# The check ignores case; finding the task does not (an upper-case copy of a real id is not found).
_JOB_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-zA-Z]{12}$")
MAX_PER_PAGE = 100
MAX_NAME_IDS = 100


class BadRequest(Exception):
    """A whole request refused with a DRS error code (HTTP 400 unless the code says otherwise)."""

    def __init__(self, code: str, arg: str | None = None) -> None:
        super().__init__(f"{code} {arg or ''}".strip())
        self.code = code
        self.arg = arg


def is_job_id(value: object) -> bool:
    """Whether a value has the documented job id shape (whether such a task exists is another matter)."""
    return isinstance(value, str) and bool(_JOB_ID.match(value))


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; empty -> DRS.M00201, not JSON or not an object -> DRS.M00200."""
    if not body.strip():
        raise BadRequest("DRS.M00201", "body")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("DRS.M00200") from None
    if not isinstance(data, dict):
        raise BadRequest("DRS.M00200")
    return data


def _int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("DRS.M00210", f"{name} must be an integer")
    return value


def page_bounds(total: int, cur_page: int, per_page: int) -> tuple[int, int]:
    """[start, end) of the requested page; 0 = all; beyond the last page -> DRS.M00211."""
    if not 0 <= per_page <= MAX_PER_PAGE:
        raise BadRequest("DRS.M00210", f"per_page must be between 0 and {MAX_PER_PAGE}")
    if cur_page < 0:
        raise BadRequest("DRS.M00210", "cur_page must not be negative")
    if per_page == 0:
        if cur_page > 1:
            raise BadRequest("DRS.M00211")
        return 0, total
    last = max(1, math.ceil(total / per_page))
    if cur_page > last:
        raise BadRequest("DRS.M00211")
    if cur_page == 0:
        raise BadRequest("DRS.M00210", "cur_page must be at least 1 unless per_page is 0")
    start = (cur_page - 1) * per_page
    return start, min(total, start + per_page)


@dataclass(frozen=True)
class IdBatch:
    """A batch-status / batch-detail request."""

    ids: list[str]
    cur_page: int
    per_page: int


def parse_id_batch(data: dict[str, Any]) -> IdBatch:
    """{"jobs": [uuid...], "page_req": {"cur_page", "per_page"}}: per_page defaults to 5 (the known trap)."""
    jobs = data.get("jobs")
    if jobs is None or jobs == []:
        raise BadRequest("DRS.M00201", "jobs")
    if not isinstance(jobs, list):
        raise BadRequest("DRS.M00202", "jobs")
    for job_id in jobs:
        if not is_job_id(job_id):
            raise BadRequest("DRS.M00202", "jobs")
    if len(set(jobs)) != len(jobs):
        raise BadRequest("DRS.M00301", "job ids")
    page = data.get("page_req")
    if page is None:
        page = {}
    if not isinstance(page, dict):
        raise BadRequest("DRS.M00202", "page_req")
    per_page = _int(page.get("per_page"), "per_page", 5)
    cur_page = _int(page.get("cur_page"), "cur_page", 1)
    page_bounds(len(jobs), cur_page, per_page)  # validate before anything is read
    return IdBatch(list(jobs), cur_page, per_page)


def parse_batch_jobs(data: dict[str, Any], max_items: int) -> list[tuple[str, str]]:
    """{"jobs": [{"job_id", "delete_type", "is_show_breakpoint_position"?}]}: refused whole if one is bad."""
    jobs = data.get("jobs")
    if jobs is None or jobs == []:
        raise BadRequest("DRS.M00201", "jobs")
    if not isinstance(jobs, list):
        raise BadRequest("DRS.M00202", "jobs")
    if max_items and len(jobs) > max_items:
        raise BadRequest("DRS.M00202", f"jobs (at most {max_items} per request)")
    items: list[tuple[str, str]] = []
    for item in jobs:
        if not isinstance(item, dict) or not item:
            raise BadRequest("DRS.M00202", "jobs")
        job_id, delete_type = item.get("job_id"), item.get("delete_type")
        if job_id is None:
            raise BadRequest("DRS.M00201", "job_id")
        if delete_type is None:
            raise BadRequest("DRS.M00201", "delete_type")
        if not is_job_id(job_id):
            raise BadRequest("DRS.M00202", "job_id")
        if delete_type not in DELETE_TYPES:
            raise BadRequest("DRS.M00202", "delete_type")
        breakpoint_flag = item.get("is_show_breakpoint_position")
        if breakpoint_flag is not None and not isinstance(breakpoint_flag, bool):
            raise BadRequest("DRS.M00202", "is_show_breakpoint_position")
        items.append((job_id, delete_type))
    if len({job_id for job_id, _ in items}) != len(items):
        raise BadRequest("DRS.M00301", "job_id")
    return items


@dataclass(frozen=True)
class ListQuery:
    """A POST /v3/{project_id}/jobs request."""

    db_use_type: str
    cur_page: int
    per_page: int
    name: str
    ids: frozenset[str]
    status: str
    engine_type: str
    net_type: str
    enterprise_project_id: str | None
    tags: dict[str, str]


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("DRS.M00202", key)
    return value.strip()


def _tags(value: Any) -> dict[str, str]:
    """The tags filter in either documented shape: {key: value} (SDK) or [{key, value}] (OTC/GOSDK)."""
    if value is None:
        return {}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    if isinstance(value, list):
        out = {}
        for tag in value:
            if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
                raise BadRequest("DRS.M00202", "tags")
            out[tag["key"]] = str(tag.get("value", ""))
        return out
    raise BadRequest("DRS.M00202", "tags")


def parse_list(data: dict[str, Any]) -> ListQuery:
    """Validate a list request; db_use_type is required and enterprise_project_id may not be ''."""
    use = data.get("db_use_type")
    if use is None or use == "":
        raise BadRequest("DRS.M00201", "db_use_type")
    if use not in DB_USE_TYPES:
        raise BadRequest("DRS.M00202", "db_use_type")
    eps = data.get("enterprise_project_id")
    if eps is not None and (not isinstance(eps, str) or eps == ""):
        raise BadRequest("DRS.M00202", "enterprise_project_id")
    status = _text(data, "status")
    if status and status not in ALL_STATUSES:
        raise BadRequest("DRS.M00202", "status")
    net_type = _text(data, "net_type")
    if net_type and net_type not in ("vpn", "vpc", "eip"):
        raise BadRequest("DRS.M00202", "net_type")
    name = _text(data, "name")
    ids: frozenset[str] = frozenset()
    parts = [p.strip() for p in name.split(",")] if name else []
    if len(parts) > 1 or (parts and is_job_id(parts[0])):
        # Several comma-separated values are ids (at most 100, SDK 3.1.219); a single uuid is an id too.
        if len(parts) > MAX_NAME_IDS or not all(is_job_id(p) for p in parts):
            raise BadRequest("DRS.M00202", "name")
        ids = frozenset(parts)
    return ListQuery(
        db_use_type=use,
        cur_page=_int(data.get("cur_page"), "cur_page", 1),
        per_page=_int(data.get("per_page"), "per_page", 10),
        name="" if ids else name,
        ids=ids,
        status=status,
        engine_type=_text(data, "engine_type"),
        net_type=net_type,
        enterprise_project_id=eps,
        tags=_tags(data.get("tags")),
    )
