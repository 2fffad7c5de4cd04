"""Pydantic wire models for the DRS v3 calls teardown uses. Unknown fields are ignored; missing required
fields or wrong types raise, so a malformed response never reaches a decision (fail closed)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorBody(_Wire):
    """The abnormal-result body; CORE also accepts errorCode/errorMsg and code/message."""

    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None

    @classmethod
    def parse_any(cls, data: Any) -> ErrorBody:
        if not isinstance(data, dict):
            return cls()
        if isinstance(data.get("error"), dict):  # Keystone style (IAM)
            inner = data["error"]
            return cls(error_code=str(inner.get("code", "")) or None, error_msg=inner.get("message"))
        code = data.get("error_code") or data.get("errorCode") or data.get("code")
        msg = data.get("error_msg") or data.get("errorMsg") or data.get("message") or data.get("error_message")
        return cls(error_code=str(code) if code is not None else None,
                   error_msg=str(msg) if msg is not None else None, request_id=data.get("request_id"))


class StatusItem(_Wire):
    """One batch-status result; failed items carry error_code and error_message (not error_msg)."""

    id: str
    status: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class BatchStatusResponse(_Wire):
    count: int
    results: list[StatusItem]


class PeriodOrder(_Wire):
    order_id: str | None = None
    status: str | None = None
    period_type: int | None = None
    period_num: int | None = None


class ChildRef(_Wire):
    id: str
    name: str | None = None


class Tag(_Wire):
    key: str
    value: str | None = None


class JobDetail(_Wire):
    """The QueryJobResp fields teardown decides on; items for unknown ids carry only id and error_code."""

    id: str
    name: str | None = None
    status: str | None = None
    db_use_type: str | None = None
    engine_type: str | None = None
    task_type: str | None = None
    job_direction: str | None = None
    period_order: PeriodOrder | None = None
    multi_write: bool | None = None
    parent_id: str | None = None
    master_job_id: str | None = None
    children: list[ChildRef] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    create_time: str | None = None
    update_time: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    inst_info: dict[str, Any] | None = None
    gtid: str | None = None  # the breakpoint: the GTID set replication stopped at
    incre_start_position: str | None = None  # ...and the incremental start position

    @field_validator("period_order", mode="before")
    @classmethod
    def _empty_order_is_none(cls, value: Any) -> Any:
        # Pay-per-use tasks carry {} (TF treats an empty object as postPaid).
        return None if value in ({}, None, "") else value

    @field_validator("children", "tags", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def order_id(self) -> str | None:
        return self.period_order.order_id if self.period_order and self.period_order.order_id else None

    @property
    def engine(self) -> str | None:
        if self.engine_type:
            return self.engine_type
        return str(self.inst_info.get("engine_type")) if self.inst_info and self.inst_info.get("engine_type") else None


class BatchDetailResponse(_Wire):
    count: int
    results: list[JobDetail]


class JobAction(_Wire):
    available_actions: list[str] = Field(default_factory=list)
    unavailable_actions: list[str] = Field(default_factory=list)
    current_action: str | None = None


class JobInfo(_Wire):
    """One row of the list call (POST /v3/{project_id}/jobs)."""

    id: str
    name: str | None = None
    status: str | None = None
    engine_type: str | None = None
    db_use_type: str | None = None
    create_time: str | None = None
    children: list[JobInfo] = Field(default_factory=list)
    job_action: JobAction | None = None

    @field_validator("children", mode="before")
    @classmethod
    def _null_children(cls, value: Any) -> Any:
        return [] if value is None else value


class JobListResponse(_Wire):
    total_record: int
    jobs: list[JobInfo]


class ActionItem(_Wire):
    """One batch-jobs result: status success|failed, with error_code/error_msg on failure."""

    id: str
    status: Literal["success", "failed"]
    error_code: str | None = None
    error_msg: str | None = None


class BatchJobsResponse(_Wire):
    count: int
    results: list[ActionItem]


DeleteType = Literal["terminate", "force_terminate", "delete"]
DB_USE_TYPES: tuple[str, ...] = ("migration", "sync", "cloudDataGuard")
